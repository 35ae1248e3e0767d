"""The converted network and its schema (docs/FORMAT.md): :class:`ConvertedNetwork` and its parts.

A :class:`ConvertedNetwork` is the folded float graph plus the fixed-point program every runtime executes: one
:class:`NeuronSpec` and its derived tables per spiking layer, one :class:`Target` per relu and the readout (each a
tuple of :class:`Term` s, the graph's linear paths into it, with int8 mantissas and an exponent), the input scale,
the :class:`QuantReport` and the :class:`Provenance`. Every part is a frozen dataclass, validated at construction
(:class:`~netx_export.errors.QuantizationError` naming the layer and the field) and round-trips through
``to_dict`` / ``from_dict``.

This module is the **one schema** of that object. Its two serialized forms go through it:

* the dict form: :meth:`ConvertedNetwork.to_dict` / :meth:`ConvertedNetwork.from_dict`;
* the file: :mod:`netx_export.hdf5` reads each dataset's encoding (HDF5 kind, dtype, shape: what only a file
  has) and hands the values to the same constructors, :func:`check_format_version` and :func:`neuron_spec` here.

Both accept exactly the format versions of :func:`check_format_version` (the one version rule). What a term
must be — the graph's linear path expansion (:func:`expand_terms`, :func:`target_root`, :func:`term_scale`) —
is part of the schema and lives here too; how its mantissas are computed (the quantizer, float64 evaluation of
linear ops) is :mod:`netx_export.quantize`. This module imports neither :mod:`netx_export.quantize` nor
:mod:`netx_export.hdf5` at import time (:meth:`ConvertedNetwork.save` imports the writer when called).
"""
from __future__ import annotations

import json
import math
import numbers
import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np

from netx_export.errors import GraphError, QuantizationError, UnsupportedNode, UnsupportedOpError
from netx_export.ir import LINEAR_KINDS, WEIGHTED_KINDS, Graph
from netx_export.lut import ThresholdLuts
from netx_export.neuron import MsatCoefs, NeuronSpec, NeuronSpecError

__all__ = [
    "FORMAT_VERSION",
    "OLDEST_FORMAT_VERSION",
    "SPEC_FIELDS_SINCE",
    "DIGEST_SINCE",
    "check_format_version",
    "parse_format_version",
    "readable_format_versions",
    "neuron_spec",
    "METHODS",
    "methods",
    "INPUT_FRAC_BITS",
    "READOUT_FRAC_BITS",
    "EXPONENT_MIN",
    "EXPONENT_MAX",
    "MANTISSA_MIN",
    "MANTISSA_MAX",
    "SOURCE_KINDS",
    "SEED_MAX",
    "Term",
    "Target",
    "TermReport",
    "LayerReport",
    "QuantReport",
    "Provenance",
    "ConvertedNetwork",
    "expand_terms",
    "target_root",
    "term_scale",
]

# ---------------------------------------------------------------------------------------------------------
# the format version: one rule for the dict form and the file
# ---------------------------------------------------------------------------------------------------------

#: The version written: ``to_dict()['format_version']`` and the file's ``/msat/format_version`` ("major.minor").
FORMAT_VERSION = "1.4"
#: The oldest version read (1.0, the first format).
OLDEST_FORMAT_VERSION = "1.0"
#: Neuron-spec fields a minor version added → that version. In a network of an older version the field may be
#: absent and then means the old behaviour (NeuronSpec's default: units 'raw', v_init 0, params None); from that
#: version on it is required (:func:`neuron_spec`).
SPEC_FIELDS_SINCE: Mapping[str, tuple[int, int]] = MappingProxyType(
    {"units": (1, 1), "v_init": (1, 2), "params": (1, 4)})
#: The file's content digest ``msat/digest`` (a file-only member, :mod:`netx_export.hdf5`): required from 1.3,
#: refused as an unexpected member before.
DIGEST_SINCE = (1, 3)

_VERSION_RE = re.compile(r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)")


def parse_format_version(value: Any, *, field: str = "format_version") -> tuple[int, int]:
    """``(major, minor)`` of a version string ``'major.minor'`` (ASCII decimal, no sign, no leading zeros); the
    syntax only (used for ``provenance.format_version``, which records what a network was made for).
    QuantizationError naming ``field`` otherwise."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise QuantizationError(f"version must be 'major.minor', got {value!r}", field=field) from None
    if not isinstance(value, str):
        raise QuantizationError(f"version must be a string 'major.minor', got {value!r} ({type(value).__name__})",
                                field=field)
    match = _VERSION_RE.fullmatch(value)
    if match is None:
        raise QuantizationError(f"version must be 'major.minor', got {value!r}", field=field)
    return int(match.group(1)), int(match.group(2))


def check_format_version(value: Any, *, field: str = "format_version") -> tuple[int, int]:
    """The one format-version rule, for :meth:`ConvertedNetwork.from_dict` and :func:`netx_export.hdf5.read`
    alike; returns ``(major, minor)`` of an accepted version.

    * **Written**: always :data:`FORMAT_VERSION` (1.4), by ``to_dict`` and by ``hdf5.write``.
    * **Read**: every minor of the current major up to the current one, :data:`OLDEST_FORMAT_VERSION` (1.0) to
      :data:`FORMAT_VERSION` (1.4); :func:`readable_format_versions` lists them.
    * **Older minors** are read as the network they were: a field a later minor added
      (:data:`SPEC_FIELDS_SINCE`: 1.1 ``units``, 1.2 ``v_init``, 1.4 ``params``) may be absent and then has its
      old meaning; in a network of the version that has a field, its absence is an error. A neuron model
      needs its registry ``since`` version (``dtif-r`` and ``bsnn-r``: 1.4); the file's digest is required
      from :data:`DIGEST_SINCE` (1.3) and refused before. Once read, a network is the current schema:
      ``to_dict`` and ``write`` give :data:`FORMAT_VERSION` (``provenance.format_version`` keeps the version it
      was made for).
    * **Refused**: a newer minor (it may add a field that changes the dynamics — 1.2's ``v_init`` does — and a
      reader that ignored it would simulate another network), any other major (0.x or 2.x), and anything that
      is not a string ``'major.minor'`` of ASCII decimals without leading zeros.

    Raises :class:`QuantizationError` naming ``field`` (the file's reader names ``msat/format_version``).
    """
    major, minor = parse_format_version(value, field=field)
    current = parse_format_version(FORMAT_VERSION)
    oldest = parse_format_version(OLDEST_FORMAT_VERSION)
    if major != current[0] or not oldest <= (major, minor) <= current:
        why = ("a newer minor version may hold fields it would silently ignore — upgrade msat-lava"
               if major == current[0] and minor > current[1] else
               f"reads {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION}; another major version is another format")
        raise QuantizationError(f"unsupported format version {value!r} (this reader knows {FORMAT_VERSION}; "
                                f"{why})", field=field)
    return major, minor


def readable_format_versions() -> tuple[str, ...]:
    """Every version :func:`check_format_version` accepts, oldest first ('1.0', ..., :data:`FORMAT_VERSION`)."""
    major, minor = parse_format_version(FORMAT_VERSION)
    first = parse_format_version(OLDEST_FORMAT_VERSION)[1]
    return tuple(f"{major}.{m}" for m in range(first, minor + 1))


# ---------------------------------------------------------------------------------------------------------
# constants of the fixed-point program
# ---------------------------------------------------------------------------------------------------------

#: The MSAT family's methods (formats ≤ 1.3). Every registered method: :func:`methods`.
METHODS = ("const", "dtt", "det", "msat")
INPUT_FRAC_BITS = 8
READOUT_FRAC_BITS = 12
#: Allowed per-term exponents: right shifts up to 32 bits, left shifts up to 16 bits.
EXPONENT_MIN, EXPONENT_MAX = -32, 16
MANTISSA_MIN, MANTISSA_MAX = -128, 127
SOURCE_KINDS = frozenset({"input", "relu", "maxpool"})
#: Seeds are 32-bit unsigned (the spike-confidence gate, ``--seed``): 0 ≤ ``provenance.seed`` ≤ SEED_MAX.
SEED_MAX = (1 << 32) - 1


def methods() -> tuple[str, ...]:
    """Every registered neuron model / conversion method (:mod:`netx_export.neurons`)."""
    from netx_export import neurons

    return neurons.names()


# ---------------------------------------------------------------------------------------------------------
# small validators
# ---------------------------------------------------------------------------------------------------------

def _int(value: Any, *, layer: str | None, field: str, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise QuantizationError(f"expected an integer, got {value!r}", layer=layer, field=field)
    out = int(value)
    if (lo is not None and out < lo) or (hi is not None and out > hi):
        bound = f"in [{lo}, {hi}]" if lo is not None and hi is not None else (
            f">= {lo}" if lo is not None else f"<= {hi}")
        raise QuantizationError(f"must be {bound}, got {out}", layer=layer, field=field)
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


# ---------------------------------------------------------------------------------------------------------
# path expansion: which terms a target has (the graph's linear paths into it)
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
    return QuantizationError(exc.detail, layer=exc.layer or layer, field=fld)


def _parts(items: Any, cls: type, layer: str, prefix: str) -> tuple:
    """``items`` as a tuple of ``cls`` (instances kept, mappings read by ``cls.from_dict``); an error in item j
    names ``layer`` and the field ``prefix[j]``."""
    out = []
    for j, item in enumerate(items):
        try:
            out.append(item if isinstance(item, cls) else cls.from_dict(item))
        except QuantizationError as exc:
            raise _relabel(exc, layer, f"{prefix}[{j}]") from None
    return tuple(out)


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
        terms = _parts(self.terms, Term, name, "terms")
        if not terms:
            raise QuantizationError("a target needs at least one term", layer=name, field="terms")
        object.__setattr__(self, "terms", terms)

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
        object.__setattr__(self, "terms", _parts(self.terms, TermReport, name, "report.terms"))

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

    * ``model_hash``: :func:`netx_export.quantize.state_hash` of the model's state_dict (or a caller-supplied
      string; '' unknown).
    * ``data_hash``: the calibration data hash (from the Calibration; '' unknown).
    * ``seed``: seed of calibration / spike confidence, 0 ≤ seed ≤ :data:`SEED_MAX` (32-bit unsigned).
    * ``tool_version``: :func:`netx_export.quantize.tool_version` at conversion time.
    * ``method``: a registered method (:func:`methods`).
    * ``hyperparameters``: JSON-serializable mapping (normalized through JSON: tuples become lists).
    * ``format_version``: :data:`FORMAT_VERSION` of the schema the network was made for ('major.minor',
      :func:`parse_format_version`; a network read from an older file keeps that file's record).
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
        object.__setattr__(self, "seed", _int(self.seed, layer=None, field="provenance.seed", lo=0, hi=SEED_MAX))
        if not isinstance(self.hyperparameters, Mapping):
            raise QuantizationError(f"must be a mapping (a JSON object), got {type(self.hyperparameters).__name__}",
                                    field="provenance.hyperparameters")
        hp = _json_normalize(dict(self.hyperparameters), "provenance.hyperparameters")
        object.__setattr__(self, "hyperparameters", MappingProxyType(hp))
        parse_format_version(self.format_version, field="provenance.format_version")

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["hyperparameters"] = json.loads(json.dumps(dict(self.hyperparameters)))
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Provenance":
        keys = tuple(cls.__dataclass_fields__)
        _require(data, keys, layer=None, what="provenance")
        return cls(**{k: data[k] for k in keys})


# ---------------------------------------------------------------------------------------------------------
# a stored neuron spec (dict form and file)
# ---------------------------------------------------------------------------------------------------------

def neuron_spec(data: Mapping[str, Any], version: tuple[int, int], *, null: str = "None",
                what: str = "the network") -> NeuronSpec:
    """One spiking layer's :class:`NeuronSpec` from its stored form (:meth:`NeuronSpec.to_dict`) in a network of
    format ``version`` (a pair from :func:`check_format_version`): the dict form's ``neurons[name]`` and the
    file's ``msat/neurons/<i>/spec`` (:mod:`netx_export.hdf5` reads the datasets into such a mapping). In order:

    * the mode must be registered, and its model's ``since`` ≤ ``version`` (``dtif-r`` / ``bsnn-r``: 1.4);
    * a field of :data:`SPEC_FIELDS_SINCE` may be absent only in a network older than the version that added it
      (it then has NeuronSpec's default, the old behaviour); from that version on it is required;
    * a model with parameters needs them in full: absent or None is refused (never the defaults
      :class:`NeuronSpec` itself would take), every parameter is required (the model's ``params_from_dict``);
    * then :meth:`NeuronSpec.from_dict`, every field's own check.

    Raises :class:`NeuronSpecError` whose ``field`` is the spec key ('mode', 'units', 'params', 'params.beta',
    'coefs.alpha', ...). ``null`` is how a None value is named in a message (the file: 'a null dataset'),
    ``what`` the network ('the file').
    """
    from netx_export import neurons as registry

    if not isinstance(data, Mapping):
        raise NeuronSpecError(f"neuron: expected a mapping, got {type(data).__name__}")
    data = dict(data)
    model = None
    if "mode" in data:
        mode = data["mode"].decode("utf-8") if isinstance(data["mode"], bytes) else data["mode"]
        model = registry.get(mode)
        if tuple(version) < model.since:
            raise NeuronSpecError(f"mode {model.name!r} needs format >= {model.since[0]}.{model.since[1]}, {what} "
                                  f"is {version[0]}.{version[1]}", field="mode")
    for key, since in SPEC_FIELDS_SINCE.items():
        if key not in data and tuple(version) >= since:
            raise NeuronSpecError(f"missing (required from format {since[0]}.{since[1]})", field=key)
    if model is not None and model.params_type is not None:
        if data.get("params") is None:  # a model's parameters are never defaulted from a stored network
            raise NeuronSpecError(f"mode {model.name!r} needs its model parameters"
                                  + (f", got {null}" if "params" in data else ""), field="params")
        if isinstance(data["params"], Mapping):
            try:
                data["params"] = model.params_from_dict(data["params"])
            except NeuronSpecError as exc:
                sub = exc.field or "params"
                field = sub if sub == "params" or sub.startswith("params.") else f"params.{sub}"
                raise NeuronSpecError(_bare_spec_error(exc), field=field) from None
    return NeuronSpec.from_dict(data)


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
                what = "is not an input/relu/maxpool node" if kind not in SOURCE_KINDS else "does not match"
                raise QuantizationError(f"source {term.source!r} ({kind}) {what}: the graph's is {src!r}",
                                        layer=name, field=f"{where}.source")
            if term.path != path:
                gone = [p for p in term.path if p not in graph]
                what = f"path node {gone[0]!r} does not exist" if gone else "path does not match"
                raise QuantizationError(f"{what}: path {list(term.path)}, the graph's {list(path)}",
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
        """Inverse of :meth:`to_dict`; validates everything (QuantizationError naming layer and field).

        ``format_version`` must be one :func:`check_format_version` accepts (the file's rule); each neuron
        mapping goes through :func:`neuron_spec` with that version (fields added by a later minor may be absent
        only in an older network; a model's parameters are never defaulted)."""
        _require(data, ("format_version", "graph", "neurons", "luts", "input_scale", "input_frac_bits",
                        "targets", "report", "provenance"), layer=None, what="network")
        version = check_format_version(data["format_version"], field="format_version")
        try:
            graph = Graph.from_dict(data["graph"])
        except GraphError as exc:
            raise QuantizationError(exc.detail, layer=exc.node, field=exc.field) from None
        neurons: dict[str, NeuronSpec] = {}
        if not isinstance(data["neurons"], Mapping):
            raise QuantizationError("expected a mapping", field="neurons")
        for name, spec in data["neurons"].items():
            try:
                neurons[name] = spec if isinstance(spec, NeuronSpec) else neuron_spec(spec, version)
            except NeuronSpecError as exc:
                raise QuantizationError(_bare_spec_error(exc), layer=name, field=f"neuron.{exc.field}") from None
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
                raise QuantizationError(exc.detail, layer=name, field=exc.field or "luts") from None
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


def _bare_spec_error(exc: NeuronSpecError) -> str:
    return exc.detail
