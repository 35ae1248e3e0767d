"""Float graph + λ → fixed-point program (DESIGN §4): the :class:`ConvertedNetwork`.

Units and bit widths (DESIGN §4, ALGORITHMS §9):

* Spiking layer l (a ``relu`` node) works in its **normalized domain**: real value = integer · λ^l · 2^−F,
  F = ``frac_bits`` = 12. Its state saturates to ``state_bits`` = 24 bits signed. A LIPool (``maxpool``) output
  has the scale (λ, F) of the relu feeding it.
* The input image is quantized to ``p_in = round(x / λ^0 · 2^F_in)``, F_in = ``input_frac_bits`` = 8,
  λ^0 = ``input_scale``.
* The **readout** (the graph's output node, a linear kind) has λ = 1 and F = 12: its integer is logits · 2^12.

The fixed-point program is one :class:`Target` per relu node (graph order) plus the readout. A target's
input at step t is ``Σ_terms term(t) + bias``; each :class:`Term` is one linear path from a source
(``input`` | ``relu`` | ``maxpool``) to the target, found by expanding the target's input expression through
``add`` nodes::

    term(t) = round_shift( P(payload_source(t)), e )

where P applies the path's ops in order with integer arithmetic (avgpool → sum-pool, its 1/area lives in the
mantissa; conv/linear → the int8 ``mantissa`` as weight and no bias; subsample/chanpad/flatten structural),
a path without a weighted op multiplies by the scalar int8 ``mantissa`` gain, and
``round_shift(a, e) = (a + 2^(−e−1)) >> −e`` (arithmetic shift, round half up) for e < 0, ``a << e`` for e ≥ 0.
The real weight a term's mantissa stands for is::

    w = W · (λ_src / λ_tgt) · 2^(F_tgt − F_src) · Π_{avgpool on path} 1 / (kH·kW)         (W = 1 for no op)
    e = min{e : max|w| / 2^e ≤ 127} (clamped to [EXPONENT_MIN, EXPONENT_MAX]),  mantissa = floor(w/2^e + 0.5)

The target's ``bias`` (int32, the target's full shape) is ``floor(B / λ_tgt · 2^F_tgt + 0.5)`` where B is the
target's input expression evaluated in float64 with every source set to zero; this carries biases through
later linear ops (e.g. conv bias → avgpool with padding → linear) exactly, borders included.

Rounding everywhere here is round half up (``floor(x + 0.5)``). Nothing is clipped silently: mantissas out
of int8, biases out of int32 and biases beyond the state width are counted in the :class:`QuantReport` and
reported with a :class:`QuantizationWarning`.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import numbers
import warnings
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Iterable, Mapping

import numpy as np

from netx_export.errors import (GraphError, QuantizationError, UnsupportedNode,
                                UnsupportedOpError)
from netx_export.ir import LINEAR_KINDS, WEIGHTED_KINDS, Graph, Node
from netx_export.lut import ThresholdLuts, make_luts
from netx_export.neuron import PRESETS, UNITS, MsatCoefs, NeuronSpec, NeuronSpecError

__all__ = [
    "FORMAT_VERSION",
    "METHODS",
    "methods",
    "bias_gain",
    "input_gain",
    "INPUT_FRAC_BITS",
    "READOUT_FRAC_BITS",
    "EXPONENT_MIN",
    "EXPONENT_MAX",
    "SOURCE_KINDS",
    "QuantizationWarning",
    "Term",
    "Target",
    "TermReport",
    "LayerReport",
    "QuantReport",
    "Provenance",
    "ConvertedNetwork",
    "quantize",
    "expand_terms",
    "quantize_weight",
    "state_hash",
    "tool_version",
    "term_scale",
    "target_root",
    "zero_source_values",
]

#: Version of the ConvertedNetwork schema (``to_dict`` and the file, docs/FORMAT.md): "major.minor".
#: A reader accepts any minor of its own major and rejects other majors.
FORMAT_VERSION = "1.4"
#: The MSAT family's methods (formats ≤ 1.3). Every registered method: :func:`methods`.
METHODS = ("const", "dtt", "det", "msat")
INPUT_FRAC_BITS = 8
READOUT_FRAC_BITS = 12


def methods() -> tuple[str, ...]:
    """Every registered neuron model / conversion method (:mod:`netx_export.neurons`)."""
    from netx_export import neurons

    return neurons.names()


def input_gain(neurons: Mapping[str, NeuronSpec], target: str, source: str, graph: Graph) -> float:
    """Extra factor on a term fed by the graph's input (the analog image current) into spiking layer ``target``:
    the neuron model's :meth:`~netx_export.neurons.NeuronModel.input_gain` (1 but for BSNN-R: 1/K, §6.4); 1 for
    other sources and for the readout. The quantizer, the reader's check and the float program use it."""
    from netx_export import neurons as registry

    spec = neurons.get(target)
    if spec is None or source != graph.input.name:
        return 1.0
    return float(registry.get(spec.mode).input_gain(spec))


def bias_gain(neurons: Mapping[str, NeuronSpec], target: str) -> float:
    """The factor on the per-step bias of ``target`` (a relu name or the readout): the target's neuron model's
    :meth:`~netx_export.neurons.NeuronModel.bias_gain` (1 for every model but the phase-coded ones); 1 for the
    readout. The quantizer, the reader's bias check and the float program all use it."""
    from netx_export import neurons as registry

    spec = neurons.get(target)
    if spec is not None:
        return float(registry.get(spec.mode).bias_gain(spec))
    first = next(iter(neurons.values()), None)  # the readout: the network's model decides
    return 1.0 if first is None else float(registry.get(first.mode).readout_bias_gain(first))
#: Allowed per-term exponents: right shifts up to 32 bits, left shifts up to 16 bits.
EXPONENT_MIN, EXPONENT_MAX = -32, 16
MANTISSA_MIN, MANTISSA_MAX = -128, 127
SOURCE_KINDS = frozenset({"input", "relu", "maxpool"})
_INT32_MAX = (1 << 31) - 1


class QuantizationWarning(UserWarning):
    """A value was clipped or saturated during quantization (always also counted in the report)."""


# ---------------------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------------------

def _round_half_up(x: np.ndarray) -> np.ndarray:
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5)


def _int(value: Any, *, layer: str | None, field: str, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise QuantizationError(f"expected an integer, got {value!r}", layer=layer, field=field)
    out = int(value)
    if (lo is not None and out < lo) or (hi is not None and out > hi):
        raise QuantizationError(f"must be in [{lo}, {hi}], got {out}", layer=layer, field=field)
    return out


def _positive(value: Any, *, layer: str | None, field: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise QuantizationError(f"expected a real number, got {value!r}", layer=layer, field=field)
    out = float(value)
    if not math.isfinite(out) or out <= 0.0:
        raise QuantizationError(f"must be finite and > 0, got {out!r}", layer=layer, field=field)
    return out


def _str(value: Any, *, layer: str | None, field: str) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if not isinstance(value, str):
        raise QuantizationError(f"expected a string, got {value!r}", layer=layer, field=field)
    return value


def _frozen(arr: np.ndarray) -> np.ndarray:
    arr = np.array(arr, copy=True)
    arr.setflags(write=False)
    return arr


def tool_version() -> str:
    """``netx_export.__version__`` if defined, else the installed ``msat-lava`` version, else 'unknown'."""
    import netx_export

    version = getattr(netx_export, "__version__", None)
    if version:
        return str(version)
    try:
        return importlib.metadata.version("msat-lava")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def state_hash(state: Any) -> str:
    """sha256 (hex) of a model's parameters: a precomputed string is returned unchanged.

    Otherwise ``state`` is an ``nn.Module`` (its ``state_dict()``) or a mapping name → tensor/array. For every
    key in **sorted** order the hash absorbs ``key`` (UTF-8), a NUL, the dtype name, the shape, a NUL and the
    raw little-endian bytes of the contiguous CPU tensor.
    """
    if isinstance(state, str):
        return state
    if hasattr(state, "state_dict") and callable(state.state_dict):
        state = state.state_dict()
    if not isinstance(state, Mapping):
        raise QuantizationError(f"cannot hash a model state of type {type(state).__name__}", field="model_hash")
    h = hashlib.sha256()
    for key in sorted(state):
        value = state[key]
        if hasattr(value, "detach"):  # torch tensor, without importing torch here
            t = value.detach().cpu().contiguous()
            dtype, shape = str(t.dtype).replace("torch.", ""), tuple(t.shape)
            raw = t.reshape(-1).view(__import__("torch").uint8).numpy().tobytes()
        else:
            a = np.ascontiguousarray(np.asarray(value))
            dtype, shape = a.dtype.name, a.shape
            raw = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        h.update(str(key).encode("utf-8") + b"\0" + f"{dtype}{shape}".encode("ascii") + b"\0")
        h.update(raw)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------------
# weight quantization
# ---------------------------------------------------------------------------------------------------------

def quantize_weight(w: np.ndarray, *, emin: int = EXPONENT_MIN, emax: int = EXPONENT_MAX
                    ) -> tuple[np.ndarray, int, int]:
    """Real weights ``w`` → (int8 mantissa, exponent e, number of clipped mantissas).

    e is the smallest integer with max|w|/2^e ≤ 127, clamped to [emin, emax] (e = 0 for an all-zero w);
    mantissa = floor(w / 2^e + 0.5), clipped to [−128, 127] (only possible when e was clamped to emax).
    """
    w = np.asarray(w, dtype=np.float64)
    amax = float(np.max(np.abs(w))) if w.size else 0.0
    if amax == 0.0:
        e = 0
    else:
        e = int(math.ceil(math.log2(amax / MANTISSA_MAX)))
        while amax / math.ldexp(1.0, e) > MANTISSA_MAX:
            e += 1
        while amax / math.ldexp(1.0, e - 1) <= MANTISSA_MAX:
            e -= 1
    e = min(max(e, emin), emax)
    q = _round_half_up(w / math.ldexp(1.0, e))
    clipped = int(np.count_nonzero((q < MANTISSA_MIN) | (q > MANTISSA_MAX)))
    q = np.clip(q, MANTISSA_MIN, MANTISSA_MAX).astype(np.int8)
    return q, e, clipped


# ---------------------------------------------------------------------------------------------------------
# path expansion
# ---------------------------------------------------------------------------------------------------------

def target_root(graph: Graph, name: str) -> str:
    """The node whose value is a target's input: a relu's input node, or the output node itself (readout)."""
    node = graph[name]
    return node.inputs[0] if node.kind == "relu" else node.name


def expand_terms(graph: Graph, root: str) -> list[tuple[str, tuple[str, ...], str | None]]:
    """Expand the linear expression ending at node ``root`` into paths ``(source, path, op)``.

    ``path`` lists the linear op nodes (not ``add``) from the source (exclusive) to ``root`` (inclusive when
    it is not an ``add``) in application order; ``op`` is the path's weighted op (conv/linear) or None.
    Order: depth first, ``add`` inputs in their listed order. Raises :class:`UnsupportedOpError` when a path
    holds two weighted ops, naming both.
    """
    out: list[tuple[str, tuple[str, ...], str | None]] = []
    bad: list[UnsupportedNode] = []

    def walk(name: str, suffix: tuple[str, ...]) -> None:
        node = graph[name]
        if node.kind in SOURCE_KINDS:
            ops = [n for n in suffix if graph[n].kind in WEIGHTED_KINDS]
            if len(ops) > 1:
                bad.append(UnsupportedNode(
                    name=ops[1], op=graph[ops[1]].kind, target=ops[0],
                    reason=f"weighted ops {ops[0]!r} and {ops[1]!r} in series without a nonlinearity between "
                           f"them (path {name!r} -> {' -> '.join(suffix)})"))
                return
            out.append((name, suffix, ops[0] if ops else None))
        elif node.kind == "add":
            for src in node.inputs:
                walk(src, suffix)
        elif node.kind in LINEAR_KINDS:
            walk(node.inputs[0], (name,) + suffix)
        else:  # pragma: no cover - ir has no other kinds
            raise QuantizationError(f"node kind {node.kind!r} cannot be part of a linear path", layer=name)

    walk(root, ())
    if bad:
        unique = {(b.name, b.target): b for b in bad}
        raise UnsupportedOpError(list(unique.values()))
    return out


# ---------------------------------------------------------------------------------------------------------
# float64 evaluation of linear ops (bias propagation)
# ---------------------------------------------------------------------------------------------------------

def _conv2d(x: np.ndarray, w: np.ndarray, stride, padding, groups: int) -> np.ndarray:
    c, h, wd = x.shape
    co, cig, kh, kw = w.shape
    sh, sw = stride
    ph, pw = padding
    xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw)))
    ho, wo = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    g, cog = groups, co // groups
    xg = xp.reshape(g, cig, xp.shape[1], xp.shape[2])
    wg = w.reshape(g, cog, cig, kh, kw)
    out = np.zeros((g, cog, ho, wo), dtype=np.float64)
    for i in range(kh):
        for j in range(kw):
            patch = xg[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]
            out += np.einsum("goc,gchw->gohw", wg[:, :, :, i, j], patch)
    return out.reshape(co, ho, wo)


def _sum_pool(x: np.ndarray, kernel, stride, padding) -> np.ndarray:
    c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw)))
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    out = np.zeros((c, ho, wo), dtype=np.float64)
    for i in range(kh):
        for j in range(kw):
            out += xp[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]
    return out


def apply_linear(node: Node, inputs: list[np.ndarray], *, with_bias: bool = True) -> np.ndarray:
    """Float64 ANN meaning of one linear node (ir module docstring); avgpool counts padding (torch default)."""
    x = inputs[0]
    kind = node.kind
    if kind == "conv":
        out = _conv2d(x, node.weight, node.stride, node.padding, node.groups)
        if with_bias and node.bias is not None:
            out = out + node.bias[:, None, None]
        return out
    if kind == "linear":
        out = node.weight @ x
        if with_bias and node.bias is not None:
            out = out + node.bias
        return out
    if kind == "avgpool":
        return _sum_pool(x, node.kernel, node.stride, node.padding) / float(node.kernel[0] * node.kernel[1])
    if kind == "flatten":
        return x.reshape(-1)
    if kind == "add":
        return np.sum(np.stack(inputs), axis=0)
    if kind == "subsample":
        return x[:, ::node.step[0], ::node.step[1]]
    if kind == "chanpad":
        return np.pad(x, ((node.before, node.after), (0, 0), (0, 0)))
    raise QuantizationError(f"not a linear node kind: {kind!r}", layer=node.name)


def zero_source_values(graph: Graph, roots: Iterable[str]) -> dict[str, np.ndarray | None]:
    """Value of each needed node with every source (input/relu/maxpool) = 0; None means all zeros."""
    memo: dict[str, np.ndarray | None] = {}

    def value(name: str) -> np.ndarray | None:
        if name in memo:
            return memo[name]
        node = graph[name]
        if node.kind in SOURCE_KINDS:
            memo[name] = None
            return None
        ins = [value(i) for i in node.inputs]
        has_bias = node.kind in WEIGHTED_KINDS and node.bias is not None
        if all(v is None for v in ins) and not has_bias:
            memo[name] = None
            return None
        arrays = [np.zeros(graph.shape(i)) if v is None else v for i, v in zip(node.inputs, ins)]
        memo[name] = apply_linear(node, arrays)
        return memo[name]

    for root in roots:
        value(root)
    return memo


# ---------------------------------------------------------------------------------------------------------
# program dataclasses
# ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Term:
    """One linear path from a source to a target (module docstring).

    * ``source``: node name of kind input | relu | maxpool.
    * ``path``: linear op node names from the source to the target root, in application order (no ``add``).
    * ``op``: the path's weighted op (conv | linear) or None.
    * ``mantissa``: ``np.int8`` array, the op's weight shape; shape ``()`` (a scalar gain) when ``op`` is None.
    * ``exponent``: e ∈ [EXPONENT_MIN, EXPONENT_MAX]; the term's integer is shifted by e (right when e < 0).
    """

    source: str
    path: tuple[str, ...]
    op: str | None
    mantissa: np.ndarray
    exponent: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", _str(self.source, layer=None, field="source"))
        if isinstance(self.path, (str, bytes)):
            raise QuantizationError("expected a sequence of node names", field="path")
        object.__setattr__(self, "path", tuple(_str(p, layer=None, field="path") for p in self.path))
        if self.op is not None:
            object.__setattr__(self, "op", _str(self.op, layer=None, field="op"))
        m = np.asarray(self.mantissa)
        if m.dtype.kind not in "iu" and m.dtype.kind != "b":
            raise QuantizationError(f"must be an integer array, got dtype {m.dtype}", field="mantissa")
        if m.size and (int(m.min()) < MANTISSA_MIN or int(m.max()) > MANTISSA_MAX):
            raise QuantizationError(f"int8 mantissa out of [{MANTISSA_MIN}, {MANTISSA_MAX}]", field="mantissa")
        object.__setattr__(self, "mantissa", _frozen(m.astype(np.int8)))
        object.__setattr__(self, "exponent",
                           _int(self.exponent, layer=None, field="exponent", lo=EXPONENT_MIN, hi=EXPONENT_MAX))

    def dequantized(self) -> np.ndarray:
        """mantissa · 2^exponent as float64 (the real weight the term stands for)."""
        return self.mantissa.astype(np.float64) * math.ldexp(1.0, self.exponent)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "path": tuple(self.path), "op": self.op,
                "mantissa": np.array(self.mantissa), "exponent": self.exponent}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Term":
        _require(data, ("source", "path", "op", "mantissa", "exponent"), layer=None, what="term")
        return cls(source=data["source"], path=tuple(data["path"]), op=data["op"],
                   mantissa=data["mantissa"], exponent=data["exponent"])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Term):
            return NotImplemented
        return (self.source, self.path, self.op, self.exponent) == (other.source, other.path, other.op,
                                                                    other.exponent) \
            and self.mantissa.shape == other.mantissa.shape and bool(np.array_equal(self.mantissa, other.mantissa))

    __hash__ = None  # type: ignore[assignment]


def _require(data: Any, keys: tuple[str, ...], *, layer: str | None, what: str) -> None:
    if not isinstance(data, Mapping):
        raise QuantizationError(f"{what}: expected a mapping, got {type(data).__name__}", layer=layer)
    for key in keys:
        if key not in data:
            raise QuantizationError(f"{what}: missing", layer=layer, field=key)


def _relabel(exc: QuantizationError, layer: str, prefix: str) -> QuantizationError:
    fld = f"{prefix}.{exc.field}" if exc.field else prefix
    msg = str(exc)
    if ": " in msg and (exc.layer is not None or exc.field is not None):
        msg = msg.split(": ", 1)[1]
    return QuantizationError(msg, layer=exc.layer or layer, field=fld)


@dataclass(frozen=True, eq=False)
class Target:
    """The fixed-point input of one stateful consumer.

    * ``name``: the relu node's name, or the graph output node's name for the readout.
    * ``kind``: 'relu' | 'readout'.
    * ``lam``: λ of the target (raw units; 1.0 for the readout).
    * ``frac_bits``: F of the target (12).
    * ``bias``: ``np.int32`` array of the target's full shape, in target LSBs (λ·2^−F), added every step.
    * ``terms``: the paths feeding it (:func:`expand_terms` order).
    """

    name: str
    kind: str
    lam: float
    frac_bits: int
    bias: np.ndarray
    terms: tuple[Term, ...]

    def __post_init__(self) -> None:
        name = _str(self.name, layer=None, field="name")
        object.__setattr__(self, "name", name)
        kind = _str(self.kind, layer=name, field="kind")
        if kind not in ("relu", "readout"):
            raise QuantizationError(f"must be 'relu' or 'readout', got {kind!r}", layer=name, field="kind")
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "lam", _positive(self.lam, layer=name, field="lam"))
        object.__setattr__(self, "frac_bits", _int(self.frac_bits, layer=name, field="frac_bits", lo=0, hi=24))
        b = np.asarray(self.bias)
        if b.dtype != np.int32:
            raise QuantizationError(f"must be int32, got dtype {b.dtype}", layer=name, field="bias")
        object.__setattr__(self, "bias", _frozen(b))
        terms = []
        for j, term in enumerate(self.terms):
            try:
                terms.append(term if isinstance(term, Term) else Term.from_dict(term))
            except QuantizationError as exc:
                raise _relabel(exc, name, f"terms[{j}]") from None
        if not terms:
            raise QuantizationError("a target needs at least one term", layer=name, field="terms")
        object.__setattr__(self, "terms", tuple(terms))

    @property
    def one(self) -> int:
        return 1 << self.frac_bits

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "lam": self.lam, "frac_bits": self.frac_bits,
                "bias": np.array(self.bias), "terms": [t.to_dict() for t in self.terms]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Target":
        layer = str(data.get("name", "?")) if isinstance(data, Mapping) else None
        _require(data, ("name", "kind", "lam", "frac_bits", "bias", "terms"), layer=layer, what="target")
        if isinstance(data["terms"], (str, bytes, Mapping)):
            raise QuantizationError("expected a list of terms", layer=layer, field="terms")
        return cls(name=data["name"], kind=data["kind"], lam=data["lam"], frac_bits=data["frac_bits"],
                   bias=data["bias"], terms=tuple(data["terms"]))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Target):
            return NotImplemented
        return (self.name, self.kind, self.lam, self.frac_bits, self.terms) == (
            other.name, other.kind, other.lam, other.frac_bits, other.terms) \
            and self.bias.shape == other.bias.shape and bool(np.array_equal(self.bias, other.bias))

    __hash__ = None  # type: ignore[assignment]


def _float(value: Any, *, layer: str | None, field: str, nonneg: bool = True) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise QuantizationError(f"expected a real number, got {value!r}", layer=layer, field=field)
    out = float(value)
    if math.isnan(out) or (nonneg and out < 0):
        raise QuantizationError(f"must be a number >= 0, got {out!r}", layer=layer, field=field)
    return out


@dataclass(frozen=True)
class TermReport:
    """Quantization error of one term. Errors are in real weight units (target LSB per source LSB)."""

    source: str
    op: str | None
    exponent: int
    count: int               # number of mantissas
    clipped: int             # mantissas clipped to [−128, 127]
    rel_rms_error: float     # ‖m·2^e − w‖₂ / ‖w‖₂ (0 for w = 0)
    max_abs_error: float     # max |m·2^e − w|

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", _str(self.source, layer=None, field="source"))
        if self.op is not None:
            object.__setattr__(self, "op", _str(self.op, layer=None, field="op"))
        object.__setattr__(self, "exponent", _int(self.exponent, layer=None, field="exponent"))
        for name in ("count", "clipped"):
            object.__setattr__(self, name, _int(getattr(self, name), layer=None, field=name, lo=0))
        for name in ("rel_rms_error", "max_abs_error"):
            object.__setattr__(self, name, _float(getattr(self, name), layer=None, field=name))

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TermReport":
        keys = tuple(cls.__dataclass_fields__)
        _require(data, keys, layer=None, what="term report")
        return cls(**{k: data[k] for k in keys})


@dataclass(frozen=True)
class LayerReport:
    """Quantization summary of one target. Bias errors are in target LSBs."""

    name: str
    lam: float
    frac_bits: int
    bias_max_abs_error: float   # max |b̂ − B/λ·2^F| (≤ 0.5 unless saturated)
    bias_rel_rms_error: float   # ‖b̂ − B/λ·2^F‖₂ / ‖B/λ·2^F‖₂ (0 for B = 0)
    bias_saturated: int         # entries clipped to int32
    bias_over_state: int        # entries with |b̂| > 2^(state_bits−1) − 1 (relu targets only; kept, warned)
    terms: tuple[TermReport, ...] = ()

    def __post_init__(self) -> None:
        name = _str(self.name, layer=None, field="name")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "lam", _positive(self.lam, layer=name, field="lam"))
        object.__setattr__(self, "frac_bits", _int(self.frac_bits, layer=name, field="frac_bits", lo=0))
        for k in ("bias_max_abs_error", "bias_rel_rms_error"):
            object.__setattr__(self, k, _float(getattr(self, k), layer=name, field=k))
        for k in ("bias_saturated", "bias_over_state"):
            object.__setattr__(self, k, _int(getattr(self, k), layer=name, field=k, lo=0))
        terms = []
        for j, t in enumerate(self.terms):
            try:
                terms.append(t if isinstance(t, TermReport) else TermReport.from_dict(t))
            except QuantizationError as exc:
                raise _relabel(exc, name, f"report.terms[{j}]") from None
        object.__setattr__(self, "terms", tuple(terms))

    @property
    def clipped(self) -> int:
        """All clipped values of this layer: mantissas + saturated bias entries."""
        return sum(t.clipped for t in self.terms) + self.bias_saturated

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "terms"}
        out["terms"] = [t.to_dict() for t in self.terms]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LayerReport":
        layer = str(data.get("name", "?")) if isinstance(data, Mapping) else None
        keys = tuple(cls.__dataclass_fields__)
        _require(data, keys, layer=layer, what="layer report")
        return cls(**{k: (tuple(data[k]) if k == "terms" else data[k]) for k in keys})


@dataclass(frozen=True)
class QuantReport:
    """Per-target quantization summaries (targets order) and the warnings raised while quantizing."""

    layers: tuple[LayerReport, ...]
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        layers = []
        for layer in self.layers:
            layers.append(layer if isinstance(layer, LayerReport) else LayerReport.from_dict(layer))
        object.__setattr__(self, "layers", tuple(layers))
        object.__setattr__(self, "warnings",
                           tuple(_str(w, layer=None, field="report.warnings") for w in self.warnings))

    @property
    def total_clipped(self) -> int:
        return sum(layer.clipped for layer in self.layers)

    def layer(self, name: str) -> LayerReport:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"layers": [layer.to_dict() for layer in self.layers], "warnings": list(self.warnings)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "QuantReport":
        _require(data, ("layers", "warnings"), layer=None, what="report")
        return cls(layers=tuple(data["layers"]), warnings=tuple(data["warnings"]))


def _json_normalize(value: Any, field: str) -> Any:
    try:
        return json.loads(json.dumps(value, sort_keys=True, allow_nan=False, default=_json_default))
    except (TypeError, ValueError) as exc:
        raise QuantizationError(f"must be JSON-serializable: {exc}", field=field) from None


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, MsatCoefs):
        return value.to_dict()
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


@dataclass(frozen=True)
class Provenance:
    """Where a ConvertedNetwork came from.

    * ``model_hash``: :func:`state_hash` of the model's state_dict (or a caller-supplied string; '' unknown).
    * ``data_hash``: the calibration data hash (from the Calibration; '' unknown).
    * ``seed``: seed of calibration / spike confidence.
    * ``tool_version``: :func:`tool_version` at conversion time.
    * ``method``: 'const' | 'dtt' | 'det' | 'msat'.
    * ``hyperparameters``: JSON-serializable mapping (normalized through JSON: tuples become lists).
    * ``format_version``: :data:`FORMAT_VERSION` of the schema the network was made for.
    """

    model_hash: str
    data_hash: str
    seed: int
    tool_version: str
    method: str
    hyperparameters: Mapping[str, Any]
    format_version: str = FORMAT_VERSION

    def __post_init__(self) -> None:
        for k in ("model_hash", "data_hash", "tool_version", "method", "format_version"):
            object.__setattr__(self, k, _str(getattr(self, k), layer=None, field=f"provenance.{k}"))
        if self.method not in methods():
            raise QuantizationError(f"must be one of {methods()}, got {self.method!r}", field="provenance.method")
        object.__setattr__(self, "seed", _int(self.seed, layer=None, field="provenance.seed"))
        if not isinstance(self.hyperparameters, Mapping):
            raise QuantizationError("must be a mapping", field="provenance.hyperparameters")
        hp = _json_normalize(dict(self.hyperparameters), "provenance.hyperparameters")
        object.__setattr__(self, "hyperparameters", MappingProxyType(hp))
        _parse_version(self.format_version, field="provenance.format_version")

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["hyperparameters"] = json.loads(json.dumps(dict(self.hyperparameters)))
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Provenance":
        keys = tuple(cls.__dataclass_fields__)
        _require(data, keys, layer=None, what="provenance")
        return cls(**{k: data[k] for k in keys})


def _parse_version(text: str, *, field: str) -> tuple[int, int]:
    parts = str(text).split(".")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise QuantizationError(f"version must be 'major.minor', got {text!r}", field=field)
    return int(parts[0]), int(parts[1])


# ---------------------------------------------------------------------------------------------------------
# ConvertedNetwork
# ---------------------------------------------------------------------------------------------------------

def term_scale(net_or_graph: Any, source: str, *, lambdas: Mapping[str, float] | None = None,
               input_scale: float | None = None, input_frac_bits: int | None = None,
               frac_bits: Mapping[str, int] | None = None) -> tuple[float, int]:
    """(λ, F) of a source node's payload: input → (λ^0, F_in); relu → its (λ, F); maxpool → its relu's."""
    if isinstance(net_or_graph, ConvertedNetwork):
        net = net_or_graph
        graph = net.graph
        lambdas = {n: s.lam for n, s in net.neurons.items()}
        frac_bits = {n: s.frac_bits for n, s in net.neurons.items()}
        input_scale, input_frac_bits = net.input_scale, net.input_frac_bits
    else:
        graph = net_or_graph
    node = graph[source]
    while node.kind == "maxpool":
        node = graph[node.inputs[0]]
    if node.kind == "input":
        return float(input_scale), int(input_frac_bits)  # type: ignore[arg-type]
    if node.kind == "relu":
        return float(lambdas[node.name]), int(frac_bits[node.name])  # type: ignore[index]
    raise QuantizationError(f"{source!r} is not a source (input, relu or maxpool of a relu)", layer=source)


def _check_graph(graph: Graph) -> None:
    out = graph.output
    if out.kind not in LINEAR_KINDS:
        raise QuantizationError(f"the graph output must be a linear node (readout), got kind {out.kind!r}",
                                layer=out.name, field="kind")
    for node in graph:
        if node.kind == "maxpool" and graph[node.inputs[0]].kind != "relu":
            raise QuantizationError("a maxpool (LIPooling) input must be a relu output", layer=node.name,
                                    field="inputs")


def _target_names(graph: Graph) -> list[tuple[str, str]]:
    return [(n.name, "relu") for n in graph if n.kind == "relu"] + [(graph.output.name, "readout")]


@dataclass(frozen=True, eq=False)
class ConvertedNetwork:
    """A converted network: the folded float graph plus everything the fixed-point runtimes need.

    * ``graph``: the folded float :class:`~netx_export.ir.Graph` (float64 weights/biases, raw ANN units).
    * ``neurons``: relu node name → :class:`NeuronSpec` (graph order); mode, λ, coefs, SC p, F, state bits.
    * ``luts``: relu node name → :class:`ThresholdLuts` (None for mode 'const').
    * ``input_scale``: λ^0, raw input units; ``input_frac_bits``: F_in (8).
    * ``targets``: one :class:`Target` per relu (graph order), then the readout (graph output node).
    * ``report``: :class:`QuantReport`; ``provenance``: :class:`Provenance`.

    Validated at construction (every field, every term against the graph); errors are
    :class:`QuantizationError` naming the layer and field.
    """

    graph: Graph
    neurons: Mapping[str, NeuronSpec]
    luts: Mapping[str, ThresholdLuts | None]
    input_scale: float
    input_frac_bits: int
    targets: tuple[Target, ...]
    report: QuantReport
    provenance: Provenance

    def __post_init__(self) -> None:
        if not isinstance(self.graph, Graph):
            raise QuantizationError("expected a Graph", field="graph")
        graph = self.graph
        _check_graph(graph)
        relus = [n.name for n in graph if n.kind == "relu"]

        if not isinstance(self.neurons, Mapping) or list(self.neurons) != relus:
            got = list(self.neurons) if isinstance(self.neurons, Mapping) else self.neurons
            raise QuantizationError(f"neurons must be keyed by the relu nodes in graph order {relus}, got {got}",
                                    field="neurons")
        for name, spec in self.neurons.items():
            if not isinstance(spec, NeuronSpec):
                raise QuantizationError(f"expected NeuronSpec, got {type(spec).__name__}", layer=name,
                                        field="neuron")
        object.__setattr__(self, "neurons", MappingProxyType(dict(self.neurons)))

        if not isinstance(self.luts, Mapping) or list(self.luts) != relus:
            raise QuantizationError("luts must be keyed by the relu nodes in graph order", field="luts")
        from netx_export import neurons as registry

        for name, lut in self.luts.items():
            spec = self.neurons[name]
            try:
                registry.get(spec.mode).check_tables(spec, lut)
            except NeuronSpecError as exc:
                raise QuantizationError(_bare_spec_error(exc), layer=name, field=exc.field) from None
        object.__setattr__(self, "luts", MappingProxyType(dict(self.luts)))

        object.__setattr__(self, "input_scale", _positive(self.input_scale, layer=graph.input.name,
                                                          field="input_scale"))
        object.__setattr__(self, "input_frac_bits", _int(self.input_frac_bits, layer=graph.input.name,
                                                         field="input_frac_bits", lo=0, hi=16))

        targets = tuple(t if isinstance(t, Target) else Target.from_dict(t) for t in self.targets)
        object.__setattr__(self, "targets", targets)
        expected = _target_names(graph)
        got = [(t.name, t.kind) for t in targets]
        if got != expected:
            raise QuantizationError(f"targets must be {expected}, got {got}", field="targets")
        shapes = graph.shapes()
        for tgt in targets:
            self._check_target(tgt, shapes)

        if not isinstance(self.report, QuantReport):
            raise QuantizationError("expected QuantReport", field="report")
        if [r.name for r in self.report.layers] != [t.name for t in targets]:
            raise QuantizationError("report layers must match the targets", field="report.layers")
        if not isinstance(self.provenance, Provenance):
            raise QuantizationError("expected Provenance", field="provenance")

    def _check_target(self, tgt: Target, shapes: Mapping[str, tuple[int, ...]]) -> None:
        graph, name = self.graph, tgt.name
        if tgt.kind == "relu":
            spec = self.neurons[name]
            if tgt.lam != spec.lam:
                raise QuantizationError(f"λ {tgt.lam!r} differs from the neuron spec's {spec.lam!r}", layer=name,
                                        field="lam")
            if tgt.frac_bits != spec.frac_bits:
                raise QuantizationError("frac_bits differs from the neuron spec", layer=name, field="frac_bits")
        else:
            if tgt.lam != 1.0:
                raise QuantizationError(f"the readout has λ = 1, got {tgt.lam!r}", layer=name, field="lam")
            if tgt.frac_bits != READOUT_FRAC_BITS:
                raise QuantizationError(f"the readout has F = {READOUT_FRAC_BITS}", layer=name, field="frac_bits")
        if tgt.bias.shape != tuple(shapes[name]):
            raise QuantizationError(f"shape {tgt.bias.shape} differs from the target shape {shapes[name]}",
                                    layer=name, field="bias")
        try:
            expected = expand_terms(graph, target_root(graph, name))
        except UnsupportedOpError as exc:
            raise QuantizationError(str(exc), layer=name, field="terms") from None
        if len(expected) != len(tgt.terms):
            raise QuantizationError(f"expected {len(expected)} term(s) from the graph, got {len(tgt.terms)}",
                                    layer=name, field="terms")
        for j, ((src, path, op), term) in enumerate(zip(expected, tgt.terms)):
            where = f"terms[{j}]"
            if term.source != src:
                kind = graph[term.source].kind if term.source in graph else "missing"
                raise QuantizationError(f"source {term.source!r} ({kind}) does not match the graph's {src!r}",
                                        layer=name, field=f"{where}.source")
            if term.path != path:
                raise QuantizationError(f"path {list(term.path)} does not match the graph's {list(path)}",
                                        layer=name, field=f"{where}.path")
            if term.op != op:
                raise QuantizationError(f"op {term.op!r} does not match the graph's {op!r}", layer=name,
                                        field=f"{where}.op")
            want = () if op is None else graph[op].weight.shape
            if term.mantissa.shape != tuple(want):
                raise QuantizationError(f"mantissa shape {term.mantissa.shape} differs from {tuple(want)}",
                                        layer=name, field=f"{where}.mantissa")

    # -- access -------------------------------------------------------------------------------------
    def target(self, name: str) -> Target:
        for t in self.targets:
            if t.name == name:
                return t
        raise KeyError(name)

    @property
    def readout(self) -> Target:
        return self.targets[-1]

    @property
    def method(self) -> str:
        return self.provenance.method

    def source_scale(self, source: str) -> tuple[float, int]:
        """(λ, F) of a source node's payload (see :func:`term_scale`)."""
        return term_scale(self, source)

    def save(self, path, overwrite: bool = False):
        """Write this network to ``path`` (:func:`netx_export.hdf5.write`); returns the path."""
        from netx_export import hdf5

        return hdf5.write(self, path, overwrite=overwrite)

    # -- serialization ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "graph": self.graph.to_dict(),
            "neurons": {k: v.to_dict() for k, v in self.neurons.items()},
            "luts": {k: (None if v is None else v.to_dict()) for k, v in self.luts.items()},
            "input_scale": self.input_scale,
            "input_frac_bits": self.input_frac_bits,
            "targets": [t.to_dict() for t in self.targets],
            "report": self.report.to_dict(),
            "provenance": self.provenance.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ConvertedNetwork":
        """Inverse of :meth:`to_dict`; validates everything (QuantizationError naming layer and field)."""
        _require(data, ("format_version", "graph", "neurons", "luts", "input_scale", "input_frac_bits",
                        "targets", "report", "provenance"), layer=None, what="network")
        major, _ = _parse_version(data["format_version"], field="format_version")
        if major != int(FORMAT_VERSION.split(".")[0]):
            raise QuantizationError(f"unsupported format version {data['format_version']!r} "
                                    f"(this reader knows {FORMAT_VERSION})", field="format_version")
        try:
            graph = Graph.from_dict(data["graph"])
        except GraphError as exc:
            raise QuantizationError(str(exc), layer=exc.node, field=exc.field) from None
        neurons: dict[str, NeuronSpec] = {}
        if not isinstance(data["neurons"], Mapping):
            raise QuantizationError("expected a mapping", field="neurons")
        for name, spec in data["neurons"].items():
            try:
                neurons[name] = spec if isinstance(spec, NeuronSpec) else NeuronSpec.from_dict(spec)
            except NeuronSpecError as exc:
                raise QuantizationError(str(exc), layer=name, field=f"neuron.{exc.field}") from None
            except (TypeError, ValueError) as exc:
                raise QuantizationError(str(exc), layer=name, field="neuron") from None
        from netx_export import neurons as registry

        luts: dict[str, Any] = {}
        if not isinstance(data["luts"], Mapping):
            raise QuantizationError("expected a mapping", field="luts")
        for name, lut in data["luts"].items():
            try:
                model = registry.get(neurons[name].mode) if name in neurons else None
                if lut is None or not isinstance(lut, Mapping) or model is None or model.tables_type is None:
                    luts[name] = lut if not isinstance(lut, Mapping) else ThresholdLuts.from_dict(lut)
                else:
                    luts[name] = model.tables_from_dict(lut)
            except NeuronSpecError as exc:
                raise QuantizationError(str(exc), layer=name, field=exc.field or "luts") from None
            except (TypeError, ValueError) as exc:
                raise QuantizationError(str(exc), layer=name, field="luts") from None
        if isinstance(data["targets"], (str, bytes, Mapping)):
            raise QuantizationError("expected a list of targets", field="targets")
        targets = tuple(Target.from_dict(t) for t in data["targets"])
        return cls(graph=graph, neurons=neurons, luts=luts, input_scale=data["input_scale"],
                   input_frac_bits=data["input_frac_bits"], targets=targets,
                   report=QuantReport.from_dict(data["report"]),
                   provenance=Provenance.from_dict(data["provenance"]))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConvertedNetwork):
            return NotImplemented
        return _deep_equal(self.to_dict(), other.to_dict())

    __hash__ = None  # type: ignore[assignment]


def _deep_equal(a: Any, b: Any) -> bool:
    """Deep equality of to_dict() trees; arrays must match in dtype, shape and values exactly."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and a.shape == b.shape and bool(np.array_equal(a, b)))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return list(a.keys()) == list(b.keys()) and all(_deep_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_deep_equal(x, y) for x, y in zip(a, b))
    if type(a) is not type(b) and not (isinstance(a, numbers.Number) and isinstance(b, numbers.Number)):
        return False
    return bool(a == b)


# ---------------------------------------------------------------------------------------------------------
# quantize()
# ---------------------------------------------------------------------------------------------------------

def _calibration_values(calibration: Any, graph: Graph, input_scale: float | None) -> tuple[dict, float, str]:
    """(λ per relu name, λ^0, data hash) from a Calibration object or a plain mapping."""
    data_hash = ""
    if isinstance(calibration, Mapping):
        lams = dict(calibration)
        if graph.input.name in lams:
            value = lams.pop(graph.input.name)
            input_scale = value if input_scale is None else input_scale
    else:
        lams = None
        for attr in ("lambdas", "lam", "lams", "scales"):
            value = getattr(calibration, attr, None)
            if isinstance(value, Mapping):
                lams = dict(value)
                break
        if lams is None:
            raise QuantizationError(f"cannot read λ per relu from a {type(calibration).__name__}",
                                    field="calibration")
        if input_scale is None:
            input_scale = getattr(calibration, "input_scale", None)
        data_hash = str(getattr(calibration, "data_hash", "") or "")
    if input_scale is None:
        raise QuantizationError("the input scale λ^0 is missing (pass input_scale=)", layer=graph.input.name,
                                field="input_scale")
    relus = [n.name for n in graph if n.kind == "relu"]
    unknown = sorted(set(lams) - set(relus))
    if unknown:
        raise QuantizationError(f"λ given for node(s) that are not relu nodes of the graph: {unknown}",
                                layer=unknown[0], field="lam")
    out = {}
    for name in relus:
        if name not in lams:
            raise QuantizationError("no λ for this spiking layer", layer=name, field="lam")
        value = lams[name]
        if np.ndim(value) != 0:
            raise QuantizationError(f"λ must be one scalar per layer (format {FORMAT_VERSION} has no "
                                    f"channel-wise scales), got shape {np.shape(value)}", layer=name, field="lam")
        out[name] = _positive(float(np.asarray(value)), layer=name, field="lam")
    return out, _positive(float(np.asarray(input_scale)), layer=graph.input.name, field="input_scale"), data_hash


def _bare_spec_error(exc: NeuronSpecError) -> str:
    text = str(exc)
    prefix = f"field {exc.field!r}: "
    return text[len(prefix):] if exc.field is not None and text.startswith(prefix) else text


def _layer_params(model, params: Any, graph: Graph, name: str) -> Any:
    """The parameter object of spiking layer ``name``: the model's per-layer derivation from the graph
    (:meth:`~netx_export.neurons.NeuronModel.layer_params`, e.g. BSNN-R's stage depth), else ``params``."""
    if model.params_type is None:
        return None
    return model.layer_params(params, graph, name)


def _resolve_coefs(method: str, preset: str | None, coefs: Any) -> tuple[MsatCoefs | None, str | None]:
    from netx_export import neurons as registry

    if method == "const" or registry.get(method).params_type is not None:
        return None, None
    if coefs is not None:
        if isinstance(coefs, MsatCoefs):
            return coefs, None
        try:
            return MsatCoefs.from_dict(coefs), None
        except NeuronSpecError as exc:
            raise QuantizationError(str(exc), field=exc.field or "coefs") from None
    if preset is None:
        raise QuantizationError(f"method {method!r} needs a preset or explicit coefs", field="preset")
    if preset not in PRESETS:
        raise QuantizationError(f"unknown preset {preset!r}; known: {sorted(PRESETS)}", field="preset")
    return PRESETS[preset], preset


def quantize(graph: Graph, calibration: Any, *, method: str = "msat", preset: str | None = "resnet20",
             coefs: MsatCoefs | Mapping[str, float] | None = None, k_const: float = 1.0,
             sc_p: Mapping[str, float] | None = None, gamma: int = 1, sc_early: int = 16, sc_gate: str = "code",
             frac_bits: int = 12, state_bits: int = 24, input_scale: float | None = None,
             input_frac_bits: int = INPUT_FRAC_BITS, seed: int = 0, model_hash: Any = "",
             data_hash: str | None = None, hyperparameters: Mapping[str, Any] | None = None,
             msat_units: str = "raw", v_init: float = 0.0, params: Any = None) -> ConvertedNetwork:
    """Quantize a folded float graph to the fixed-point program (module docstring, DESIGN §4).

    * ``calibration``: a Calibration (``lambdas`` per relu name, ``input_scale``, ``data_hash``) or a mapping
      relu name → λ (raw units; may also hold the input node's name → λ^0).
    * ``method``: a registered neuron model (:func:`methods`): 'const' (θ = k_const·λ; k_const = 1 is max-norm /
      percentile-norm), 'dtt', 'det', 'msat', 'dtif-r', 'bsnn-r', ...
    * ``params``: the model-specific parameters of a registry model with a ``params_type`` (its object, or a
      mapping name → value over its defaults, :func:`netx_export.neurons.params_from_options`); None = defaults.
      MSAT-family settings (preset/coefs, k_const, msat_units) are ignored for such a model.
    * ``preset``: MSAT coefficient preset (:data:`netx_export.neuron.PRESETS`), or explicit ``coefs``.
    * ``sc_p``: spike confidence p per relu name (others: gate off).
    * ``gamma``, ``sc_early``, ``sc_gate``, ``frac_bits`` (F = 12), ``state_bits`` (24): NeuronSpec options.
    * ``input_scale``: λ^0 (overrides the calibration's); ``input_frac_bits``: F_in = 8.
    * ``model_hash``: a string or the model / its state_dict (hashed by :func:`state_hash`).
    * ``hyperparameters``: extra JSON-serializable settings recorded in the provenance (e.g. λ method).
    * ``msat_units``: :attr:`NeuronSpec.units` of every spiking layer — 'raw' (the paper's raw-unit MSAT) or
      'normalized' (the BrainCog port: λ = 1 inside the formula, ALGORITHMS §2.2); LUTs follow it.
    * ``v_init``: :attr:`NeuronSpec.v_init` of every spiking layer, the initial residual as a fraction of λ
      (0 = the paper's empty start; 0.5 = half-threshold start).

    Raises :class:`UnsupportedOpError` for two weighted ops in series (every such pair listed) and
    :class:`QuantizationError` for bad settings or λ; clipping is counted and warned, never silent.
    """
    if not isinstance(graph, Graph):
        raise QuantizationError(f"expected a Graph, got {type(graph).__name__}", field="graph")
    from netx_export import neurons as registry

    method = str(method)
    if method not in methods():
        raise QuantizationError(f"unknown method {method!r}; expected one of {methods()}", field="method")
    model = registry.get(method)
    if model.params_type is not None:
        try:
            params = params if isinstance(params, model.params_type) else registry.params_from_options(method, params)
        except NeuronSpecError as exc:
            raise QuantizationError(str(exc), field=f"params.{exc.field}") from None
        preset, coefs, k_const, msat_units = None, None, 1.0, "raw"
    elif params is not None:
        raise QuantizationError(f"method {method!r} has no model parameters", field="params")
    if msat_units not in UNITS:
        raise QuantizationError(f"unknown msat_units {msat_units!r}; expected one of {UNITS}", field="msat_units")
    _check_graph(graph)
    lams, lam0, cal_hash = _calibration_values(calibration, graph, input_scale)
    coef_obj, preset_used = _resolve_coefs(method, preset, coefs)
    relus = [n.name for n in graph if n.kind == "relu"]
    sc = dict(sc_p or {})
    unknown = sorted(set(sc) - set(relus))
    if unknown:
        raise QuantizationError(f"spike confidence given for unknown relu node(s) {unknown}", layer=unknown[0],
                                field="sc_p")

    # every path of every target first: report all unsupported pairs at once
    roots = [(name, kind, target_root(graph, name)) for name, kind in _target_names(graph)]
    expansions: dict[str, list] = {}
    bad: list[UnsupportedNode] = []
    for name, _, root in roots:
        try:
            expansions[name] = expand_terms(graph, root)
        except UnsupportedOpError as exc:
            bad.extend(exc.nodes)
    if bad:
        unique = {(b.name, b.target): b for b in bad}
        raise UnsupportedOpError(list(unique.values()))

    neurons: dict[str, NeuronSpec] = {}
    luts: dict[str, ThresholdLuts | None] = {}
    for name in relus:
        try:
            spec = NeuronSpec(mode=method, lam=lams[name], k_const=k_const, coefs=coef_obj, gamma=gamma,
                              sc_p=sc.get(name), sc_early=sc_early, sc_gate=sc_gate, frac_bits=frac_bits,
                              state_bits=state_bits, units=msat_units, v_init=v_init,
                              params=_layer_params(model, params, graph, name))
            neurons[name] = spec
            luts[name] = model.make_tables(spec)
        except NeuronSpecError as exc:
            raise QuantizationError(str(exc), layer=name, field=exc.field) from None

    scale_of = {n: (s.lam, s.frac_bits) for n, s in neurons.items()}
    zero_values = zero_source_values(graph, [root for _, _, root in roots])
    shapes = graph.shapes()
    targets: list[Target] = []
    layer_reports: list[LayerReport] = []
    messages: list[str] = []
    for name, kind, root in roots:
        lam_t, f_t = (scale_of[name] if kind == "relu" else (1.0, READOUT_FRAC_BITS))
        terms, term_reports = [], []
        for src, path, op in expansions[name]:
            lam_s, f_s = term_scale(graph, src, lambdas=lams, input_scale=lam0, input_frac_bits=input_frac_bits,
                                    frac_bits={n: s[1] for n, s in scale_of.items()})
            gain = (lam_s / lam_t) * math.ldexp(1.0, f_t - f_s) * input_gain(neurons, name, src, graph)
            for p in path:
                node = graph[p]
                if node.kind == "avgpool":
                    gain /= float(node.kernel[0] * node.kernel[1])
            w = np.asarray(graph[op].weight if op is not None else 1.0, dtype=np.float64) * gain
            mant, e, clipped = quantize_weight(w)
            err = mant.astype(np.float64) * math.ldexp(1.0, e) - w
            norm = float(np.sqrt(np.sum(w * w)))
            rel = float(np.sqrt(np.sum(err * err)) / norm) if norm > 0 else 0.0
            terms.append(Term(source=src, path=path, op=op, mantissa=mant, exponent=e))
            term_reports.append(TermReport(source=src, op=op, exponent=e, count=int(mant.size), clipped=clipped,
                                           rel_rms_error=rel, max_abs_error=float(np.max(np.abs(err)))))
            if clipped:
                messages.append(f"layer {name!r}: {clipped} of {mant.size} mantissas of the term from {src!r}"
                                f"{f' through {op!r}' if op else ''} clipped to int8 (exponent limited to "
                                f"{EXPONENT_MAX})")
        raw = zero_values.get(root)
        exact = (np.zeros(shapes[name]) if raw is None else raw) / lam_t * math.ldexp(1.0, f_t)
        exact = exact * bias_gain(neurons, name if kind == "relu" else "")
        rounded = _round_half_up(exact)
        saturated = int(np.count_nonzero(np.abs(rounded) > _INT32_MAX))
        bias = np.clip(rounded, -_INT32_MAX - 1, _INT32_MAX).astype(np.int32)
        over_state = 0
        if kind == "relu":
            vmax = neurons[name].v_max
            over_state = int(np.count_nonzero(np.abs(bias.astype(np.int64)) > vmax))
        berr = bias.astype(np.float64) - exact
        bnorm = float(np.sqrt(np.sum(exact * exact)))
        if saturated:
            messages.append(f"layer {name!r}: {saturated} bias value(s) saturated to int32")
        if over_state:
            messages.append(f"layer {name!r}: {over_state} bias value(s) exceed the {neurons[name].state_bits}-bit "
                            f"state range ±{neurons[name].v_max}")
        targets.append(Target(name=name, kind=kind, lam=lam_t, frac_bits=f_t, bias=bias, terms=tuple(terms)))
        layer_reports.append(LayerReport(
            name=name, lam=lam_t, frac_bits=f_t,
            bias_max_abs_error=float(np.max(np.abs(berr))) if berr.size else 0.0,
            bias_rel_rms_error=float(np.sqrt(np.sum(berr * berr)) / bnorm) if bnorm > 0 else 0.0,
            bias_saturated=saturated, bias_over_state=over_state, terms=tuple(term_reports)))

    for message in messages:
        warnings.warn(message, QuantizationWarning, stacklevel=2)

    hp: dict[str, Any] = {
        "method": method,
        "params": None if params is None else params.to_dict(),
        "preset": preset_used,
        "coefs": None if coef_obj is None else coef_obj.to_dict(),
        "k_const": float(k_const),
        "gamma": int(gamma),
        "sc_p": {k: float(v) for k, v in sc.items()},
        "sc_early": int(sc_early),
        "sc_gate": str(sc_gate),
        "frac_bits": int(frac_bits),
        "state_bits": int(state_bits),
        "msat_units": str(msat_units),
        "v_init": float(v_init),
        "input_frac_bits": int(input_frac_bits),
        "readout_frac_bits": READOUT_FRAC_BITS,
        "exponent_range": [EXPONENT_MIN, EXPONENT_MAX],
    }
    for key, value in dict(hyperparameters or {}).items():
        hp.setdefault(key, value)
    provenance = Provenance(
        model_hash=state_hash(model_hash) if model_hash is not None else "",
        data_hash=cal_hash if data_hash is None else str(data_hash),
        seed=int(seed), tool_version=tool_version(), method=method, hyperparameters=hp)
    return ConvertedNetwork(graph=graph, neurons=neurons, luts=luts, input_scale=lam0,
                            input_frac_bits=input_frac_bits, targets=tuple(targets),
                            report=QuantReport(layers=tuple(layer_reports), warnings=tuple(messages)),
                            provenance=provenance)
