"""Float graph + λ → fixed-point program (DESIGN §4): the quantizer that makes a :class:`ConvertedNetwork`.

The network type and its schema (:class:`ConvertedNetwork`, :class:`Target`, :class:`Term`, :class:`QuantReport`,
:class:`Provenance`, :data:`FORMAT_VERSION` and the version rule, the path expansion :func:`expand_terms`) live in
:mod:`netx_export.network`; they are re-exported here so that ``from netx_export.quantize import
ConvertedNetwork`` keeps working. This module adds how the numbers are computed: :func:`quantize`,
:func:`quantize_weight`, the float64 evaluation of linear ops (:func:`apply_linear`, :func:`zero_source_values`)
and the models' input / bias gains. It never imports :mod:`netx_export.hdf5`.

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
import math
import numbers
import warnings
from typing import Any, Iterable, Mapping

import numpy as np

from netx_export.errors import QuantizationError, UnsupportedNode, UnsupportedOpError
from netx_export.ir import WEIGHTED_KINDS, Graph, Node
from netx_export.lut import ThresholdLuts
from netx_export.network import (  # noqa: F401 - re-exported: the network type and its schema (netx_export.network)
    EXPONENT_MAX, EXPONENT_MIN, FORMAT_VERSION, INPUT_FRAC_BITS, MANTISSA_MAX, MANTISSA_MIN, METHODS,
    READOUT_FRAC_BITS, SOURCE_KINDS, ConvertedNetwork, LayerReport, Provenance, QuantReport, Target, Term,
    TermReport, _check_graph, _deep_equal, _positive, _target_names, expand_terms, methods,
    target_root, term_scale)
from netx_export.neuron import PRESETS, UNITS, MsatCoefs, NeuronSpec, NeuronSpecError

__all__ = [
    # the quantizer (this module)
    "quantize",
    "quantize_weight",
    "apply_linear",
    "zero_source_values",
    "bias_gain",
    "input_gain",
    "state_hash",
    "tool_version",
    "QuantizationWarning",
    # re-exported from netx_export.network (the network type and its schema)
    "FORMAT_VERSION",
    "METHODS",
    "methods",
    "INPUT_FRAC_BITS",
    "READOUT_FRAC_BITS",
    "EXPONENT_MIN",
    "EXPONENT_MAX",
    "SOURCE_KINDS",
    "Term",
    "Target",
    "TermReport",
    "LayerReport",
    "QuantReport",
    "Provenance",
    "ConvertedNetwork",
    "expand_terms",
    "term_scale",
    "target_root",
]

_INT32_MAX = (1 << 31) - 1


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


class QuantizationWarning(UserWarning):
    """A value was clipped or saturated during quantization (always also counted in the report)."""


# ---------------------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------------------

def _round_half_up(x: np.ndarray) -> np.ndarray:
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5)


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
            raise QuantizationError(exc.detail, field=exc.field or "coefs") from None
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
    * ``sc_p``: spike confidence p per relu name (others: gate off), or one number for every relu.
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
            raise QuantizationError(exc.detail, field=f"params.{exc.field}") from None
        preset, coefs, k_const, msat_units = None, None, 1.0, "raw"
    elif params is not None:
        raise QuantizationError(f"method {method!r} has no model parameters", field="params")
    if msat_units not in UNITS:
        raise QuantizationError(f"unknown msat_units {msat_units!r}; expected one of {UNITS}", field="msat_units")
    _check_graph(graph)
    lams, lam0, cal_hash = _calibration_values(calibration, graph, input_scale)
    coef_obj, preset_used = _resolve_coefs(method, preset, coefs)
    relus = [n.name for n in graph if n.kind == "relu"]
    if sc_p is None:
        sc = {}
    elif isinstance(sc_p, numbers.Real) and not isinstance(sc_p, bool):
        sc = {r: float(sc_p) for r in relus}  # one p for every spiking layer
    elif isinstance(sc_p, Mapping):
        sc = dict(sc_p)
    else:
        raise QuantizationError(f"expected a mapping relu name -> p, or one number for every layer, got "
                                f"{type(sc_p).__name__}", field="sc_p")
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
            raise QuantizationError(exc.detail, layer=name, field=exc.field) from None

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
