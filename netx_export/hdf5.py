"""The network file: netx HDF5 layout + the ``/msat`` extension (docs/FORMAT.md). This module owns the format.

* :func:`write` stores a :class:`~netx_export.network.ConvertedNetwork` atomically (temporary file in the
  same directory, then ``os.replace``); it refuses to overwrite unless ``overwrite=True``.
* :func:`read` rebuilds the ConvertedNetwork **only** through validation: every field's presence, dtype,
  shape and range, the references between nodes, the graph's order (no cycles), the format version, and the
  netx view in ``/layer`` (which must equal the one derived from ``/msat``). Every problem, including a file
  that is not HDF5 or is truncated, raises :class:`~netx_export.errors.FormatError` naming the file, the
  layer and the field (the HDF5 path of the dataset).

What is checked where: this module checks what only a file has — HDF5 kinds, dtypes, declared shapes (before a
dataset is read), links, sizes, unexpected members, the digest, the netx view, and that the fixed-point
program and report equal their derivation from the float graph. What a value must be is the schema of
:mod:`netx_export.network`, shared with the dict form: the format version (:func:`~netx_export.network.
check_format_version`, the one version rule), the neuron specs (:func:`~netx_export.network.neuron_spec`) and
every part's constructor (:class:`~netx_export.network.Target`, ``Term``, ``LayerReport``, ``Provenance``,
``ConvertedNetwork``); their QuantizationError / NeuronSpecError is re-raised as FormatError naming the
dataset.

Layout (all datasets, no attributes carry information):

``/layer/<i>``
    lava-dl netx layers (LAVA_NOTES §2.1–2.2): ``input`` / ``conv`` / ``flatten`` / ``dense`` with netx field
    names; integer-valued float32 weights; CUBA neuron groups (``iDecay`` 4096, ``vDecay`` 0, ``vThMant``,
    ``refDelay``, ``gradedSpike``; never ``messageBits``). It is a loadable, binary-spike, max-norm IF view
    of the network (:func:`netx_view`) when the graph is a chain netx can express; otherwise ``/layer`` holds
    only the input layer and ``/msat/netx/loadable`` is 0.
``/msat``
    ``format_version`` ('major.minor'), ``graph/<i>`` (nodes), ``input/{scale,frac_bits}``,
    ``neurons/<i>/{node,spec,lut}``, ``targets/<i>/{name,kind,lam,frac_bits,bias,terms/<j>/...}``,
    ``report/...``, ``provenance/...``, ``netx/{loadable,reason,input_message_bits}``.

Encoding rules inside ``/msat``: str → scalar UTF-8 variable-length string; int → int64 scalar; float →
float64 scalar; bool → bool scalar; None → an empty (null dataspace) float64 dataset; arrays keep their
dtype (graph weights float64, mantissas int8, biases int32, LUTs int32); lists of names → 1-D string arrays;
lists of records → groups ``0..n-1``. Datasets of ≥ 1024 elements are gzip-compressed (level 4, shuffle).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from netx_export.errors import FormatError, GraphError, QuantizationError
from netx_export.fileio import atomic_target
from netx_export.ir import NODE_TYPES, Graph, node_from_dict
from netx_export.lut import ThresholdLuts
from netx_export.network import (DIGEST_SINCE, EXPONENT_MAX, FORMAT_VERSION, READOUT_FRAC_BITS, SEED_MAX,
                                 SPEC_FIELDS_SINCE, ConvertedNetwork, LayerReport, Provenance, QuantReport, Target,
                                 Term, check_format_version, neuron_spec, target_root, term_scale)
from netx_export.neuron import MsatCoefs, NeuronSpec, NeuronSpecError
from netx_export.quantize import bias_gain, input_gain, quantize_weight, zero_source_values

__all__ = ["write", "read", "content_hash", "netx_view", "NetxView", "FORMAT_VERSION", "NETX_VTH_MAX",
           "NETX_READOUT_VTH"]

#: Largest netx ``vThMant`` (17-bit unsigned, LAVA_NOTES §2.4).
NETX_VTH_MAX = (1 << 17) - 1
#: ``vThMant`` of the netx readout layer: the largest allowed, so the integrator never spikes below saturation.
NETX_READOUT_VTH = NETX_VTH_MAX
_COMPRESS_MIN = 1024
_MAX_ELEMENTS = 1 << 30
# SEED_MAX (0 ≤ provenance/seed ≤ 2^32 − 1) and DIGEST_SINCE are the schema's (netx_export.network), imported above.
#: What a read may allocate: the datasets' declared sizes together may not exceed
#: max(READ_BUDGET_MIN, READ_BUDGET_RATIO × file size), and one chunked dataset may not declare more than
#: MAX_EXPANSION × its stored bytes (gzip cannot expand more than ~1032×; more means unallocated storage
#: or fill values). Checked from the metadata, before any data is read.
READ_BUDGET_MIN = 16 << 20
READ_BUDGET_RATIO = 64
MAX_EXPANSION = 1100
_MAX_DEPTH = 12
_MAX_OBJECTS = 1 << 20


def _h5py():
    import h5py

    return h5py


# =========================================================================================================
# netx view
# =========================================================================================================

@dataclass(frozen=True)
class NetxView:
    """The netx (``/layer``) view of a network.

    * ``loadable``: True when ``layers`` is a chain lava-dl's ``netx.hdf5.Network`` builds as intended.
    * ``reason``: why not ('' when loadable).
    * ``layers``: one dict per ``/layer/<i>`` (dataset name → value; ``neuron`` → dict).
    * ``input_message_bits``: pass this to ``netx.hdf5.Network(input_message_bits=...)``: the first synapse
      receives the graded input ``p_in = round(x/λ^0·2^F_in)`` (signed, |p_in| ≤ 2^F_in), F_in + 2 bits.
    """

    loadable: bool
    reason: str
    layers: tuple[dict, ...]
    input_message_bits: int


def _netx_input_layer(graph: Graph) -> dict:
    shape = graph.input.shape
    return {"type": "input", "shape": np.array(shape if len(shape) == 3 else (shape[0], 1, 1), dtype=np.int64)}


def _chain_reason(net: ConvertedNetwork) -> str:
    graph = net.graph
    nodes = list(graph.nodes)
    for k, node in enumerate(nodes):
        if node.kind not in ("input", "conv", "linear", "relu", "flatten"):
            return f"node {node.name!r} of kind {node.kind!r} has no netx layer type"
        if k > 0 and node.inputs != (nodes[k - 1].name,):
            return f"node {node.name!r} does not read the previous node: the graph is not a chain"
        if k < len(nodes) - 1 and [c.name for c in graph.consumers(node.name)] != [nodes[k + 1].name]:
            return f"node {node.name!r} feeds more than the next node: the graph is not a chain"
    for k, node in enumerate(nodes[1:], start=1):
        prev = nodes[k - 1].kind
        nxt = nodes[k + 1].kind if k + 1 < len(nodes) else None
        if node.kind == "relu" and prev not in ("conv", "linear"):
            return f"relu {node.name!r} does not follow a conv/linear"
        if node.kind == "flatten" and (nxt != "linear" or prev not in ("input", "relu")):
            return f"flatten {node.name!r} must sit between a spiking layer (or the input) and a linear"
        if node.kind in ("conv", "linear") and nxt is not None and nxt != "relu":
            return f"{node.kind} {node.name!r} is not followed by a relu"
    if nodes[-1].kind not in ("conv", "linear"):
        return "the output is not a conv/linear readout"
    return ""


def netx_view(net: ConvertedNetwork) -> NetxView:
    """Derive the binary-spike, max-norm IF netx view (docs/FORMAT.md, "netx view").

    Per weighted layer l with its single term (mantissa m, exponent e, source F_s, target F_t):
    one stored netx unit of v is 2^u normalized target units, u = e − F_t for the input layer (its graded
    input is p_in) and u = e + F_s − F_t for a layer fed by binary spikes (one spike = one normalized unit
    = 2^F_s payload LSBs). Then ``weight = m`` (int8, float32 storage), ``vThMant = 2^−u`` (threshold λ_l,
    i.e. k = 1, whatever the neuron mode), ``bias = floor(b/λ_l · 2^−u + 0.5)``. When 2^−u would exceed
    the 17-bit ``vThMant``, the mantissas are shifted right by d = −u − 16 (round half up) and u = −16.
    The readout (λ = 1) gets ``vThMant`` = 2^17 − 1 (an accumulator that never spikes below saturation).
    Spiking neurons: CUBA, ``iDecay`` 4096 (no current memory), ``vDecay`` 0 (no leak).
    """
    graph = net.graph
    layers: list[dict] = [_netx_input_layer(graph)]
    reason = _chain_reason(net)
    if reason:
        return NetxView(False, reason, tuple(layers), 0)
    nodes = list(graph.nodes)
    shapes = graph.shapes()
    k = 1
    while k < len(nodes):
        node = nodes[k]
        if node.kind == "flatten":
            layers.append({"type": "flatten", "shape": np.array((shapes[node.name][0], 1, 1), dtype=np.int64)})
            k += 1
            continue
        relu = nodes[k + 1] if k + 1 < len(nodes) and nodes[k + 1].kind == "relu" else None
        target = net.target(relu.name) if relu is not None else net.readout
        term = target.terms[0]
        src_kind = graph[term.source].kind
        f_s = net.source_scale(term.source)[1]
        u = term.exponent - target.frac_bits + (0 if src_kind == "input" else f_s)
        mant = term.mantissa.astype(np.int64)
        if relu is not None:
            if u > 0:
                return NetxView(False, f"layer {relu.name!r}: normalized weights exceed 127 (exponent {u} > 0), "
                                       f"a netx threshold below one weight unit cannot be represented",
                                tuple(layers[:1]), 0)
            if -u > 16:
                d = -u - 16
                mant = (mant + (1 << (d - 1))) >> d
                u = -16
            vth = 1 << (-u)
        else:
            vth = NETX_READOUT_VTH
        bias = None
        if node.bias is not None:
            b = np.floor(node.bias / target.lam * math.ldexp(1.0, -u) + 0.5)
            if np.max(np.abs(b)) >= 1 << 24:
                return NetxView(False, f"layer {target.name!r}: netx bias exceeds 2^24 (not exact in float32)",
                                tuple(layers[:1]), 0)
            bias = b.astype(np.float32)
        neuron = {"type": "CUBA", "iDecay": 4096, "vDecay": 0, "vThMant": int(vth), "refDelay": 1,
                  "gradedSpike": False}
        out_shape = shapes[node.name]
        if node.kind == "conv":
            layer = {"type": "conv", "shape": np.array(out_shape, dtype=np.int64),
                     "inChannels": int(node.weight.shape[1] * node.groups), "outChannels": int(node.weight.shape[0]),
                     "kernelSize": np.array(node.weight.shape[2:], dtype=np.int64),
                     "stride": np.array(node.stride, dtype=np.int64), "padding": np.array(node.padding, dtype=np.int64),
                     "dilation": np.array((1, 1), dtype=np.int64), "groups": int(node.groups),
                     "weight": mant.astype(np.float32)}
        else:
            layer = {"type": "dense", "shape": np.array((out_shape[0], 1, 1), dtype=np.int64),
                     "inFeatures": int(node.weight.shape[1]), "outFeatures": int(node.weight.shape[0]),
                     "weight": mant.astype(np.float32)}
        if bias is not None:
            layer["bias"] = bias
        layer["neuron"] = neuron
        layers.append(layer)
        k += 2 if relu is not None else 1
    return NetxView(True, "", tuple(layers), net.input_frac_bits + 2)


# =========================================================================================================
# writing
# =========================================================================================================

def _string_dtype():
    return _h5py().string_dtype("utf-8")


def _put(group, name: str, value: Any) -> None:
    """Encode one value under ``name`` (module docstring rules)."""
    h5py = _h5py()
    if value is None:
        group.create_dataset(name, data=h5py.Empty("f8"))
    elif isinstance(value, str):
        group.create_dataset(name, data=value, dtype=_string_dtype())
    elif isinstance(value, (bool, np.bool_)):
        group.create_dataset(name, data=np.bool_(value))
    elif isinstance(value, (int, np.integer)):
        group.create_dataset(name, data=np.int64(value))
    elif isinstance(value, (float, np.floating)):
        group.create_dataset(name, data=np.float64(value))
    elif isinstance(value, np.ndarray):
        kwargs: dict[str, Any] = {"track_times": False}
        if value.size >= _COMPRESS_MIN:
            kwargs.update(compression="gzip", compression_opts=4, shuffle=True)
        group.create_dataset(name, data=value, **kwargs)
    else:  # pragma: no cover - guarded by callers
        raise FormatError(f"cannot encode a {type(value).__name__}", field=f"{group.name}/{name}")


def _put_names(group, name: str, names) -> None:
    names = [str(n) for n in names]
    group.create_dataset(name, shape=(len(names),), dtype=_string_dtype(),
                         data=np.array(names, dtype=object) if names else None)


_NODE_PARAM_KINDS: dict[str, dict[str, str]] = {
    "input": {"shape": "ints"},
    "conv": {"weight": "f4d", "bias": "f1d?", "stride": "pair", "padding": "pair", "groups": "int"},
    "linear": {"weight": "f2d", "bias": "f1d?"},
    "relu": {},
    "maxpool": {"kernel": "pair", "stride": "pair", "padding": "pair"},
    "avgpool": {"kernel": "pair", "stride": "pair", "padding": "pair"},
    "flatten": {},
    "add": {},
    "subsample": {"step": "pair"},
    "chanpad": {"before": "int", "after": "int"},
}

_SPEC_TYPES = {"mode": "str", "lam": "float", "k_const": "float", "coefs": "coefs?", "gamma": "int",
               "sc_p": "float?", "sc_early": "int", "sc_gate": "str", "frac_bits": "int", "state_bits": "int",
               "units": "str", "v_init": "float", "params": "params?"}
# Every field is always written. A field of network.SPEC_FIELDS_SINCE may be absent from a file: the schema
# (network.neuron_spec) reads it as the default in a file older than the version that added it and refuses its
# absence from that version on.


def _model(mode: str):
    from netx_export import neurons

    return neurons.get(mode)


def _write_node(group, node) -> None:
    data = node.to_dict()
    schema = _NODE_PARAM_KINDS.get(node.kind)
    extra = set(data) - {"kind", "name", "inputs"} - set(schema or {})
    if schema is None or extra:
        raise FormatError(f"cannot encode node kind {node.kind!r} / fields {sorted(extra)}", layer=node.name,
                          field="kind")
    _put(group, "kind", node.kind)
    _put(group, "name", node.name)
    _put_names(group, "inputs", node.inputs)
    for key, kind in schema.items():
        value = data[key]
        if kind in ("ints", "pair"):
            value = np.asarray(value, dtype=np.int64)
        _put(group, key, value)


def _write_spec(group, spec: NeuronSpec, layer: str) -> None:
    data = spec.to_dict()
    if set(data) != set(_SPEC_TYPES):
        raise FormatError(f"cannot encode neuron fields {sorted(set(data) ^ set(_SPEC_TYPES))}", layer=layer,
                          field="spec")
    for key in _SPEC_TYPES:
        value = data[key]
        if key == "coefs" and value is not None:
            sub = group.create_group("coefs")
            for name in MsatCoefs.FIELDS:
                _put(sub, name, float(value[name]))
        elif key == "params" and value is not None:
            sub = group.create_group("params")
            for p in _model(spec.mode).params:
                _put(sub, p.name, p.type(value[p.name]))
        else:
            _put(group, key, value)


def _write_lut(group, lut, mode: str) -> None:
    kinds = _model(mode).table_kinds()
    for key, value in lut.to_dict().items():
        _put(group, key, np.asarray(value, dtype=np.int32) if kinds[key] == "i32_1d" else value)


def _write_netx_layer(group, layer: dict) -> None:
    for key, value in layer.items():
        if key == "type":
            group.create_dataset("type", (1,), "S10", [value.encode("ascii")])
        elif key == "neuron":
            sub = group.create_group("neuron")
            for nkey, nvalue in value.items():
                if nkey == "type":
                    sub.create_dataset("type", (1,), "S10", [nvalue.encode("ascii")])
                else:
                    sub.create_dataset(nkey, data=nvalue)
        else:
            group.create_dataset(key, data=value)


def _write_file(f, net: ConvertedNetwork) -> None:
    view = netx_view(net)
    layer_root = f.create_group("layer")
    for i, layer in enumerate(view.layers):
        _write_netx_layer(layer_root.create_group(str(i)), layer)

    m = f.create_group("msat")
    _put(m, "format_version", FORMAT_VERSION)
    nx = m.create_group("netx")
    _put(nx, "loadable", 1 if view.loadable else 0)
    _put(nx, "reason", view.reason)
    _put(nx, "input_message_bits", view.input_message_bits)

    g = m.create_group("graph")
    for i, node in enumerate(net.graph.nodes):
        _write_node(g.create_group(str(i)), node)

    inp = m.create_group("input")
    _put(inp, "scale", float(net.input_scale))
    _put(inp, "frac_bits", int(net.input_frac_bits))

    neurons = m.create_group("neurons")
    for i, (name, spec) in enumerate(net.neurons.items()):
        ng = neurons.create_group(str(i))
        _put(ng, "node", name)
        _write_spec(ng.create_group("spec"), spec, name)
        lut = net.luts[name]
        if lut is None:
            _put(ng, "lut", None)
        else:
            _write_lut(ng.create_group("lut"), lut, spec.mode)

    targets = m.create_group("targets")
    for i, tgt in enumerate(net.targets):
        tg = targets.create_group(str(i))
        _put(tg, "name", tgt.name)
        _put(tg, "kind", tgt.kind)
        _put(tg, "lam", float(tgt.lam))
        _put(tg, "frac_bits", int(tgt.frac_bits))
        _put(tg, "bias", np.asarray(tgt.bias, dtype=np.int32))
        terms = tg.create_group("terms")
        for j, term in enumerate(tgt.terms):
            sg = terms.create_group(str(j))
            _put(sg, "source", term.source)
            _put_names(sg, "path", term.path)
            _put(sg, "op", term.op)
            _put(sg, "mantissa", np.asarray(term.mantissa, dtype=np.int8))
            _put(sg, "exponent", int(term.exponent))

    rep = m.create_group("report")
    _put_names(rep, "warnings", net.report.warnings)
    rl = rep.create_group("layers")
    for i, layer in enumerate(net.report.layers):
        lg = rl.create_group(str(i))
        for key, value in layer.to_dict().items():
            if key != "terms":
                _put(lg, key, value)
        tl = lg.create_group("terms")
        for j, term in enumerate(layer.terms):
            sg = tl.create_group(str(j))
            for key, value in term.to_dict().items():
                _put(sg, key, value)

    prov = m.create_group("provenance")
    for key, value in net.provenance.to_dict().items():
        if key == "hyperparameters":
            _put(prov, key, json.dumps(value, sort_keys=True, allow_nan=False))
        else:
            _put(prov, key, value)

    # last: the digest of everything written above (format ≥ 1.3, see _digest)
    items: list[tuple[str, str]] = []
    f.visititems(lambda name, obj: items.append(
        (name, "dataset" if isinstance(obj, _h5py().Dataset) else "group")))
    _put(m, "digest", _digest(f, dict(items)))


def write(net: ConvertedNetwork, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``net`` to ``path`` atomically; returns the path.

    The file is written to a temporary file in the same directory and moved into place with
    ``os.replace`` (or hard-linked when ``overwrite`` is False, so a file appearing meanwhile is not
    clobbered). An existing ``path`` raises :class:`FileExistsRefusedError` unless ``overwrite=True``.
    On any error the temporary file is removed and ``path`` is left as it was.
    """
    if not isinstance(net, ConvertedNetwork):
        raise TypeError(f"expected a ConvertedNetwork, got {type(net).__name__}")
    path = Path(path)
    h5py = _h5py()
    with atomic_target(path, overwrite=overwrite) as tmp:
        with h5py.File(tmp, "w", track_order=False) as f:
            _write_file(f, net)
    return path


# =========================================================================================================
# reading
# =========================================================================================================

def _bare(exc: Exception) -> str:
    """The message of a typed error without its "node/layer ..., field ...: " prefix."""
    text = str(exc)
    parts = []
    for attr, label in (("node", "node"), ("layer", "layer"), ("field", "field")):
        value = getattr(exc, attr, None)
        if value is not None:
            parts.append(f"{label} {value!r}")
    prefix = ", ".join(parts) + ": "
    return text[len(prefix):] if parts and text.startswith(prefix) else text


def _file_field(net_layers: dict[str, tuple[str, int]], layer: str | None, field: str | None) -> str | None:
    """Map a ConvertedNetwork validation field ('terms[1].path', 'neuron.lam', ...) to the file's path."""
    if field is None:
        return None
    kind_index = net_layers.get(layer or "")
    if field == "targets":
        return "msat/targets"
    if field == "neurons":
        return "msat/neurons"
    if field == "input_scale":
        return "msat/input/scale"
    if field == "input_frac_bits":
        return "msat/input/frac_bits"
    if field.startswith("report"):
        return "msat/report/layers"
    if kind_index is None:
        return field
    kind, index = kind_index
    if kind == "target":
        if field == "luts" or field.startswith("luts."):
            neuron = net_layers.get("neuron:" + (layer or ""))
            return f"msat/neurons/{neuron[1]}/lut" if neuron else field
        if field.startswith("neuron."):
            neuron = net_layers.get("neuron:" + (layer or ""))
            return f"msat/neurons/{neuron[1]}/spec/{field[7:]}" if neuron else field
        path = re.sub(r"\[(\d+)\]\.?", r"/\1/", field).rstrip("/")
        return f"msat/targets/{index}/{path}"
    return field


class _Reader:
    """Validated access to an open file; every failure is a FormatError(path, layer, field)."""

    def __init__(self, f, path: str, version: tuple[int, int] = (0, 0)):
        self.f = f
        self.path = path
        self.version = version          # the file's format version, once read
        self.visited: set[str] = set()  # every member path the reader asked for (the rest is unexpected)

    def fail(self, message: str, layer: str | None, field: str | None) -> FormatError:
        return FormatError(message, path=self.path, layer=layer, field=field)

    # -- structure --------------------------------------------------------------------------------
    def node(self, group, key: str, layer: str | None):
        where = f"{group.name.rstrip('/')}/{key}".lstrip("/")
        try:
            obj = group.get(key, getlink=False)
        except Exception as exc:  # broken links, corrupt headers
            raise self.fail(f"cannot open: {exc}", layer, where) from None
        if obj is None:
            raise self.fail("missing", layer, where)
        self.visited.add(where)
        return obj, where

    def group(self, group, key: str, layer: str | None):
        h5py = _h5py()
        obj, where = self.node(group, key, layer)
        if not isinstance(obj, h5py.Group):
            raise self.fail("expected a group", layer, where)
        return obj

    def dataset(self, group, key: str, layer: str | None):
        h5py = _h5py()
        obj, where = self.node(group, key, layer)
        if not isinstance(obj, h5py.Dataset):
            raise self.fail("expected a dataset", layer, where)
        return obj, where

    def indexed(self, group, layer: str | None) -> list:
        """Sub-groups named '0'..'n-1', exactly."""
        try:
            keys = list(group.keys())
        except Exception as exc:
            raise self.fail(f"cannot list: {exc}", layer, group.name.lstrip("/")) from None
        n = len(keys)
        if sorted(keys) != sorted(str(i) for i in range(n)):
            raise self.fail(f"members must be named 0..{n - 1}, got {sorted(keys)[:8]}", layer,
                            group.name.lstrip("/"))
        return [self.group(group, str(i), layer) for i in range(n)]

    def _value(self, ds, where: str, layer: str | None):
        try:
            if ds.shape is None:
                return None
            if ds.size > _MAX_ELEMENTS:  # the scan already bounded every dataset; kept as a last guard
                raise self.fail(f"implausibly large ({ds.size} elements)", layer, where)
            return ds[()]
        except FormatError:
            raise
        except Exception as exc:
            raise self.fail(f"cannot read: {exc}", layer, where) from None

    def is_null(self, group, key: str, layer: str | None) -> bool:
        ds, _ = self.dataset(group, key, layer)
        return ds.shape is None

    # -- typed leaves -----------------------------------------------------------------------------
    def string(self, group, key: str, layer: str | None, choices=None) -> str:
        h5py = _h5py()
        ds, where = self.dataset(group, key, layer)
        if ds.shape != () or h5py.check_string_dtype(ds.dtype) is None:
            raise self.fail(f"expected a scalar string, got shape {ds.shape} dtype {ds.dtype}", layer, where)
        raw = self._value(ds, where, layer)
        try:
            text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        except UnicodeDecodeError:
            raise self.fail("not valid UTF-8", layer, where) from None
        if choices is not None and text not in choices:
            raise self.fail(f"must be one of {sorted(choices)}, got {text!r}", layer, where)
        return text

    def names(self, group, key: str, layer: str | None) -> tuple[str, ...]:
        h5py = _h5py()
        ds, where = self.dataset(group, key, layer)
        if ds.shape is None or len(ds.shape) != 1 or h5py.check_string_dtype(ds.dtype) is None:
            raise self.fail(f"expected a 1-D string array, got shape {ds.shape} dtype {ds.dtype}", layer, where)
        raw = self._value(ds, where, layer)
        try:
            return tuple(x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in raw)
        except UnicodeDecodeError:
            raise self.fail("not valid UTF-8", layer, where) from None

    def integer(self, group, key: str, layer: str | None, lo: int | None = None, hi: int | None = None) -> int:
        ds, where = self.dataset(group, key, layer)
        if ds.shape != () or ds.dtype != np.int64:  # the format writes every int as an int64 scalar
            raise self.fail(f"expected a scalar int64, got shape {ds.shape} dtype {ds.dtype}", layer, where)
        value = int(self._value(ds, where, layer))
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            bound = f"[{lo}, {hi}]" if lo is not None and hi is not None else (
                f">= {lo}" if lo is not None else f"<= {hi}")
            raise self.fail(f"must be {bound}, got {value}", layer, where)
        return value

    def real(self, group, key: str, layer: str | None, *, positive: bool = False, finite: bool = True,
             optional: bool = False) -> float | None:
        ds, where = self.dataset(group, key, layer)
        if optional and ds.shape is None:
            return None
        if ds.shape != () or ds.dtype != np.float64:  # the format writes every float as a float64 scalar
            raise self.fail(f"expected a scalar float64, got shape {ds.shape} dtype {ds.dtype}", layer, where)
        value = float(self._value(ds, where, layer))
        if (finite and not math.isfinite(value)) or math.isnan(value):
            raise self.fail(f"must be finite, got {value!r}", layer, where)
        if positive and not value > 0:
            raise self.fail(f"must be > 0, got {value!r}", layer, where)
        return value

    def boolean(self, group, key: str, layer: str | None) -> bool:
        ds, where = self.dataset(group, key, layer)
        if ds.shape != () or ds.dtype.kind != "b":
            raise self.fail(f"expected a scalar bool, got shape {ds.shape} dtype {ds.dtype}", layer, where)
        return bool(self._value(ds, where, layer))

    def array(self, group, key: str, layer: str | None, *, kinds: str, dtype=None, ndim: int | None = None,
              shape: tuple | None = None, optional: bool = False, lo=None, hi=None, finite: bool = True):
        ds, where = self.dataset(group, key, layer)
        if ds.shape is None:
            if optional:
                return None
            raise self.fail("missing value (null dataset)", layer, where)
        if ds.dtype.kind not in kinds or (dtype is not None and ds.dtype != np.dtype(dtype)):
            raise self.fail(f"wrong dtype {ds.dtype}" + (f", expected {np.dtype(dtype)}" if dtype else ""),
                            layer, where)
        if ndim is not None and len(ds.shape) != ndim:
            raise self.fail(f"expected {ndim}-D, got shape {ds.shape}", layer, where)
        if shape is not None and tuple(ds.shape) != tuple(shape):
            raise self.fail(f"expected shape {tuple(shape)}, got {ds.shape}", layer, where)
        value = np.asarray(self._value(ds, where, layer))
        if finite and value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            raise self.fail("contains NaN or infinity", layer, where)
        if value.size and ((lo is not None and value.min() < lo) or (hi is not None and value.max() > hi)):
            raise self.fail(f"values out of range [{lo}, {hi}]", layer, where)
        return value


def _read_node(r: _Reader, g, i: int):
    name = r.string(g, "name", f"graph/{i}")
    kind = r.string(g, "kind", name, choices=set(NODE_TYPES))
    data: dict[str, Any] = {"kind": kind, "name": name, "inputs": r.names(g, "inputs", name)}
    for key, typ in _NODE_PARAM_KINDS[kind].items():
        if typ == "ints":
            data[key] = tuple(int(v) for v in r.array(g, key, name, kinds="i", dtype=np.int64, ndim=1))
        elif typ == "pair":
            data[key] = tuple(int(v) for v in r.array(g, key, name, kinds="i", dtype=np.int64, shape=(2,)))
        elif typ == "int":
            data[key] = r.integer(g, key, name)
        elif typ in ("f4d", "f2d"):
            data[key] = r.array(g, key, name, kinds="f", dtype=np.float64, ndim=int(typ[1]))
        elif typ == "f1d?":
            data[key] = r.array(g, key, name, kinds="f", dtype=np.float64, ndim=1, optional=True)
    try:
        return node_from_dict(data)
    except GraphError as exc:
        raise r.fail(_bare(exc), name, f"msat/graph/{i}/{exc.field}" if exc.field else f"msat/graph/{i}") from None


def _read_spec(r: _Reader, g, layer: str) -> NeuronSpec:
    """``neurons/<i>/spec``: each dataset's encoding here, then the schema's :func:`~netx_export.network.neuron_spec`
    (the dict form's path): which fields the file's version requires, the mode's ``since``, the model's
    parameters in full, every value's range."""
    base = g.name.lstrip("/")
    data: dict[str, Any] = {}
    for key, typ in _SPEC_TYPES.items():
        if key in SPEC_FIELDS_SINCE and key not in g:
            continue  # whether the file's version may lack it is the schema's rule (neuron_spec below)
        if typ == "str":
            data[key] = r.string(g, key, layer)
        elif typ == "float":
            data[key] = r.real(g, key, layer)
        elif typ == "float?":
            data[key] = r.real(g, key, layer, optional=True)
        elif typ == "int":
            data[key] = r.integer(g, key, layer)
        elif typ == "coefs?":
            obj, where = r.node(g, key, layer)
            if isinstance(obj, _h5py().Dataset) and obj.shape is None:
                data[key] = None
            elif isinstance(obj, _h5py().Group):
                data[key] = {name: r.real(obj, name, layer) for name in MsatCoefs.FIELDS}
            else:
                raise r.fail("expected a group or a null dataset", layer, where)
        elif typ == "params?":
            obj, where = r.node(g, key, layer)
            if isinstance(obj, _h5py().Dataset) and obj.shape is None:
                data[key] = None
            elif isinstance(obj, _h5py().Group):
                try:  # the group's members and their dtypes are the mode's parameters
                    model = _model(data.get("mode"))
                except NeuronSpecError as exc:
                    raise r.fail(_bare(exc), layer, f"{base}/mode") from None
                if model.params_type is None:
                    raise r.fail(f"mode {model.name!r} has no model parameters, got a group", layer, where)
                readers = {float: r.real, int: r.integer, str: r.string}
                data[key] = {p.name: readers[p.type](obj, p.name, layer) for p in model.params}
            else:
                raise r.fail("expected a group or a null dataset", layer, where)
    try:
        return neuron_spec(data, r.version, null="a null dataset", what="the file")
    except NeuronSpecError as exc:
        field = (exc.field or "").replace(".", "/")
        raise r.fail(_bare(exc), layer, f"{base}/{field}" if field else base) from None


def _read_lut(r: _Reader, g, layer: str, spec: NeuronSpec):
    """The stored tables, which must equal the neuron model's :meth:`make_tables` of the stored spec (MSAT:
    :func:`netx_export.lut.make_luts`): they are recomputed first, so every array's shape is checked against its
    derivation before it is read."""
    base = g.name.lstrip("/")
    model = _model(spec.mode)
    try:
        with np.errstate(all="ignore"):
            expected = model.make_tables(spec)
    except NeuronSpecError as exc:
        field = (exc.field or "lut").replace("luts.", "")
        raise r.fail(f"the tables of this neuron spec cannot be built: {_bare(exc)}", layer,
                     f"{base}/{field}") from None
    if expected is None:  # pragma: no cover - a model without tables has a null lut, checked by the caller
        raise r.fail(f"mode {spec.mode!r} has no tables", layer, base)
    want = expected.to_dict()
    kinds = model.table_kinds()
    data: dict[str, Any] = {}
    for name, typ in kinds.items():
        if typ == "str":
            data[name] = r.string(g, name, layer)
        elif typ == "int":
            data[name] = r.integer(g, name, layer)
        else:
            data[name] = r.array(g, name, layer, kinds="i", dtype=np.int32, ndim=1, shape=want[name].shape)
    try:
        luts = model.tables_from_dict(data)
    except NeuronSpecError as exc:
        field = (exc.field or "lut").replace("luts.", "")
        raise r.fail(_bare(exc), layer, f"{base}/{field}") from None
    for name in kinds:
        got, exp = data[name], want[name]
        same = np.array_equal(got, exp) if isinstance(exp, np.ndarray) else got == exp
        if not same:
            detail = ""
            if isinstance(exp, np.ndarray):
                bad = np.flatnonzero(np.asarray(got) != exp)
                detail = f" ({bad.size} entr{'y' if bad.size == 1 else 'ies'} differ, first at index {bad[0]})"
            else:
                detail = f" (stored {got!r}, derived {exp!r})"
            raise r.fail(f"does not match the table derived from the neuron spec ({type(model).__name__}."
                         "make_tables)" + detail, layer, f"{base}/{name}")
    return luts


def _read_term(r: _Reader, g, layer: str, shapes_of_op: Callable[[str | None], tuple | None]) -> Term:
    source = r.string(g, "source", layer)
    path = r.names(g, "path", layer)
    op = None if r.is_null(g, "op", layer) else r.string(g, "op", layer)
    want = shapes_of_op(op)
    mant = r.array(g, "mantissa", layer, kinds="i", dtype=np.int8, shape=want)
    exponent = r.integer(g, "exponent", layer)
    try:
        return Term(source=source, path=path, op=op, mantissa=mant, exponent=exponent)
    except QuantizationError as exc:
        raise r.fail(_bare(exc), layer, f"{g.name.lstrip('/')}/{exc.field}") from None


def _read_network(r: _Reader) -> ConvertedNetwork:
    f = r.f
    m = r.group(f, "msat", None)
    version = r.string(m, "format_version", None)
    try:  # the one version rule, the dict form's too
        r.version = check_format_version(version)
    except QuantizationError as exc:
        raise r.fail(_bare(exc), None, "msat/format_version") from None

    nodes = [_read_node(r, g, i) for i, g in enumerate(r.indexed(r.group(m, "graph", None), None))]
    seen: set[str] = set()
    for i, node in enumerate(nodes):
        if node.name in seen:
            raise r.fail("duplicate node name", node.name, f"msat/graph/{i}/name")
        seen.add(node.name)
    try:
        graph = Graph(tuple(nodes))
    except GraphError as exc:
        idx = next((i for i, n in enumerate(nodes) if n.name == exc.node), None)
        field = f"msat/graph/{idx}/{exc.field or 'inputs'}" if idx is not None else "msat/graph"
        raise r.fail(_bare(exc), exc.node, field) from None
    shapes = graph.shapes()

    inp = r.group(m, "input", None)  # ranges: ConvertedNetwork's checks below
    input_scale = r.real(inp, "scale", graph.input.name)
    input_frac_bits = r.integer(inp, "frac_bits", graph.input.name)

    neurons: dict[str, NeuronSpec] = {}
    luts: dict[str, ThresholdLuts | None] = {}
    for i, ng in enumerate(r.indexed(r.group(m, "neurons", None), None)):
        name = r.string(ng, "node", f"neurons/{i}")
        if name not in graph or graph[name].kind != "relu":
            raise r.fail(f"{name!r} is not a relu node of the graph", name, f"msat/neurons/{i}/node")
        if name in neurons:
            raise r.fail("duplicate neuron entry", name, f"msat/neurons/{i}/node")
        neurons[name] = spec = _read_spec(r, r.group(ng, "spec", name), name)
        obj, where = r.node(ng, "lut", name)
        has_tables = _model(spec.mode).tables_type is not None
        if isinstance(obj, _h5py().Dataset) and obj.shape is None:
            if has_tables:
                raise r.fail(f"mode {spec.mode!r} needs its threshold tables, got a null lut", name, where)
            luts[name] = None
        elif isinstance(obj, _h5py().Group):
            if not has_tables:
                raise r.fail(f"mode {spec.mode!r} has no LUTs, got a group", name, where)
            luts[name] = _read_lut(r, obj, name, spec)
        else:
            raise r.fail("expected a group or a null dataset", name, where)

    def op_shape(op: str | None, layer: str, where: str) -> tuple:
        if op is None:
            return ()
        if op not in graph or graph[op].kind not in ("conv", "linear"):
            raise r.fail(f"op {op!r} is not a conv/linear node of the graph", layer, where)
        return tuple(graph[op].weight.shape)

    # A target's bias and a term's mantissas have their declared shape checked before they are read (the target
    # must be a graph node, the op a conv/linear); kind, λ, F, sources and paths are checked by Target and
    # ConvertedNetwork (the schema, against the graph's own path expansion).
    targets: list[Target] = []
    for i, tg in enumerate(r.indexed(r.group(m, "targets", None), None)):
        name = r.string(tg, "name", f"targets/{i}")
        kind = r.string(tg, "kind", name)
        if name not in graph:
            raise r.fail(f"target {name!r} is not a node of the graph", name, f"msat/targets/{i}/name")
        lam = r.real(tg, "lam", name)
        frac_bits = r.integer(tg, "frac_bits", name)
        bias = r.array(tg, "bias", name, kinds="i", dtype=np.int32, shape=shapes[name])
        terms = []
        for j, sg in enumerate(r.indexed(r.group(tg, "terms", name), name)):
            terms.append(_read_term(r, sg, name, lambda op, j=j: op_shape(op, name, f"msat/targets/{i}/terms/{j}/op")))
        try:
            targets.append(Target(name=name, kind=kind, lam=lam, frac_bits=frac_bits, bias=bias, terms=tuple(terms)))
        except QuantizationError as exc:
            raise r.fail(_bare(exc), name, _file_field({name: ("target", i)}, name, exc.field)) from None

    rep = r.group(m, "report", None)
    warnings_ = r.names(rep, "warnings", None)
    layers = []
    for i, lg in enumerate(r.indexed(r.group(rep, "layers", None), None)):
        name = r.string(lg, "name", f"report/{i}")
        data: dict[str, Any] = {"name": name, "lam": r.real(lg, "lam", name)}  # ranges: LayerReport / TermReport
        for key in ("bias_max_abs_error", "bias_rel_rms_error"):
            data[key] = r.real(lg, key, name, finite=False)
        for key in ("frac_bits", "bias_saturated", "bias_over_state"):
            data[key] = r.integer(lg, key, name)
        terms = []
        for sg in r.indexed(r.group(lg, "terms", name), name):
            terms.append({"source": r.string(sg, "source", name),
                          "op": None if r.is_null(sg, "op", name) else r.string(sg, "op", name),
                          "exponent": r.integer(sg, "exponent", name),
                          "count": r.integer(sg, "count", name),
                          "clipped": r.integer(sg, "clipped", name),
                          "rel_rms_error": r.real(sg, "rel_rms_error", name, finite=False),
                          "max_abs_error": r.real(sg, "max_abs_error", name, finite=False)})
        data["terms"] = tuple(terms)
        try:
            layers.append(LayerReport.from_dict(data))
        except QuantizationError as exc:
            field = re.sub(r"\[(\d+)\]\.?", r"/\1/", (exc.field or "").replace("report.", "")).rstrip("/")
            raise r.fail(_bare(exc), name, f"msat/report/layers/{i}/{field}") from None
    report = QuantReport(layers=tuple(layers), warnings=warnings_)

    pg = r.group(m, "provenance", None)
    prov: dict[str, Any] = {k: r.string(pg, k, None) for k in ("model_hash", "data_hash", "tool_version", "method",
                                                                  "format_version")}
    prov["seed"] = r.integer(pg, "seed", None)  # 0 ≤ seed ≤ SEED_MAX: Provenance's rule
    text = r.string(pg, "hyperparameters", None)
    try:
        prov["hyperparameters"] = json.loads(text)  # a JSON object: Provenance's rule
    except ValueError:
        raise r.fail("not valid JSON", None, "msat/provenance/hyperparameters") from None
    try:
        provenance = Provenance.from_dict(prov)
    except QuantizationError as exc:
        raise r.fail(_bare(exc), None, f"msat/provenance/{(exc.field or '').replace('provenance.', '')}") from None

    try:
        net = ConvertedNetwork(graph=graph, neurons=neurons, luts=luts, input_scale=input_scale,
                               input_frac_bits=input_frac_bits, targets=tuple(targets), report=report,
                               provenance=provenance)
    except QuantizationError as exc:
        where: dict[str, tuple[str, int]] = {t.name: ("target", i) for i, t in enumerate(targets)}
        where.update({"neuron:" + n: ("neuron", i) for i, n in enumerate(neurons)})
        raise r.fail(_bare(exc), exc.layer, _file_field(where, exc.layer, exc.field)) from None
    _check_program(r, net)
    _check_hyperparameters(r, net)
    _check_netx(r, net, m)
    return net


# =========================================================================================================
# cross-checks: the fixed-point program, the report and the settings are derived from the float graph
# =========================================================================================================

def _bias_matches(stored: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """Where the stored int32 bias is the quantization of ``exact`` (round half up, int32 saturation); a value
    within 1e-9 (relative) of a rounding tie may round either way (float64 sums differ between machines)."""
    want = np.clip(np.floor(exact + 0.5), -(1 << 31), (1 << 31) - 1)
    ok = stored == want
    if not ok.all():
        tol = 1e-9 * np.maximum(1.0, np.abs(exact))
        ok |= (np.abs(stored - want) == 1) & (np.abs(stored - exact) <= 0.5 + tol)
    return ok


def _close(a: float, b: float) -> bool:
    return a == b or (math.isfinite(a) and math.isfinite(b) and abs(a - b) <= 1e-6 * max(abs(a), abs(b)) + 1e-12)


def _check_program(r: _Reader, net: ConvertedNetwork) -> None:
    """Recompute every target's terms (exponent, mantissas) and bias, and the quantization report, from the
    float graph, λ and the input scale (netx_export.quantize, docs/FORMAT.md §5) and refuse any difference:
    the float graph (float model) and the fixed-point program (fixed model) of one file must agree."""
    graph = net.graph
    shapes = graph.shapes()
    roots = {t.name: target_root(graph, t.name) for t in net.targets}
    with np.errstate(all="ignore"):
        zero_values = zero_source_values(graph, list(roots.values()))
    messages: list[str] = []
    for i, (tgt, rep) in enumerate(zip(net.targets, net.report.layers)):
        base = f"msat/targets/{i}"
        lam_t, f_t = tgt.lam, tgt.frac_bits
        if tgt.kind == "readout" and (lam_t, f_t) != (1.0, READOUT_FRAC_BITS):  # pragma: no cover - validated
            raise r.fail("the readout has λ = 1 and F = 12", tgt.name, f"{base}/lam")
        rbase = f"msat/report/layers/{i}"
        if rep.lam != lam_t or rep.frac_bits != f_t:
            raise r.fail(f"report λ/F ({rep.lam!r}, {rep.frac_bits}) differ from the target's ({lam_t!r}, {f_t})",
                         tgt.name, f"{rbase}/{'lam' if rep.lam != lam_t else 'frac_bits'}")
        if len(rep.terms) != len(tgt.terms):
            raise r.fail(f"the report has {len(rep.terms)} term(s), the target {len(tgt.terms)}", tgt.name,
                         f"{rbase}/terms")
        for j, (term, trep) in enumerate(zip(tgt.terms, rep.terms)):
            where = f"{base}/terms/{j}"
            lam_s, f_s = term_scale(net, term.source)
            gain = (lam_s / lam_t) * math.ldexp(1.0, f_t - f_s) * input_gain(net.neurons, tgt.name, term.source,
                                                                               net.graph)
            for p in term.path:
                node = graph[p]
                if node.kind == "avgpool":
                    gain /= float(node.kernel[0] * node.kernel[1])
            with np.errstate(all="ignore"):
                w = np.asarray(graph[term.op].weight if term.op is not None else 1.0, dtype=np.float64) * gain
            if not np.all(np.isfinite(w)):
                raise r.fail("the real weights of this term are not finite (λ or the input scale out of range)",
                             tgt.name, f"{where}/mantissa")
            mant, e, clipped = quantize_weight(w)
            if term.exponent != e:
                raise r.fail(f"exponent {term.exponent} differs from {e}, derived from the float weights "
                             f"({'msat/graph/' + str(list(graph).index(graph[term.op])) + '/weight' if term.op else 'gain'}"
                             f") and λ", tgt.name, f"{where}/exponent")
            if not np.array_equal(term.mantissa, mant):
                bad = np.flatnonzero(term.mantissa.reshape(-1) != mant.reshape(-1))
                raise r.fail(f"{bad.size} mantissa(s) differ from the quantized float weights (first at flat index "
                             f"{bad[0]}: stored {int(term.mantissa.reshape(-1)[bad[0]])}, derived "
                             f"{int(mant.reshape(-1)[bad[0]])})", tgt.name, f"{where}/mantissa")
            err = mant.astype(np.float64) * math.ldexp(1.0, e) - w
            norm = float(np.sqrt(np.sum(w * w)))
            rel = float(np.sqrt(np.sum(err * err)) / norm) if norm > 0 else 0.0
            mx = float(np.max(np.abs(err))) if err.size else 0.0
            twhere = f"{rbase}/terms/{j}"
            for key, got, want in (("source", trep.source, term.source), ("op", trep.op, term.op),
                                   ("exponent", trep.exponent, e), ("count", trep.count, int(mant.size)),
                                   ("clipped", trep.clipped, clipped)):
                if got != want:
                    raise r.fail(f"stored {got!r}, derived {want!r}", tgt.name, f"{twhere}/{key}")
            for key, got, want in (("rel_rms_error", trep.rel_rms_error, rel), ("max_abs_error", trep.max_abs_error, mx)):
                if not _close(got, want):
                    raise r.fail(f"stored {got!r}, derived {want!r}", tgt.name, f"{twhere}/{key}")
            if clipped:
                messages.append(f"layer {tgt.name!r}: {clipped} of {mant.size} mantissas of the term from "
                                f"{term.source!r}{f' through {term.op!r}' if term.op else ''} clipped to int8 "
                                f"(exponent limited to {EXPONENT_MAX})")
        raw = zero_values.get(roots[tgt.name])
        with np.errstate(all="ignore"):
            exact = (np.zeros(shapes[tgt.name]) if raw is None else raw) / lam_t * math.ldexp(1.0, f_t)
            exact = exact * bias_gain(net.neurons, tgt.name if tgt.kind == "relu" else "")
        if not np.all(np.isfinite(exact)):
            raise r.fail("the bias derived from the float graph is not finite", tgt.name, f"{base}/bias")
        stored = tgt.bias.astype(np.int64)
        ok = _bias_matches(stored, exact)
        if not ok.all():
            k = int(np.flatnonzero(~ok.reshape(-1))[0])
            raise r.fail(f"{int((~ok).sum())} value(s) differ from the bias derived from the float graph (first at "
                         f"flat index {k}: stored {int(stored.reshape(-1)[k])}, derived "
                         f"{float(exact.reshape(-1)[k]):.6g})", tgt.name, f"{base}/bias")
        saturated = int(np.count_nonzero(np.abs(np.floor(exact + 0.5)) > (1 << 31) - 1))
        over_state = 0
        if tgt.kind == "relu":
            spec = net.neurons[tgt.name]
            over_state = int(np.count_nonzero(np.abs(stored) > spec.v_max))
        berr = stored.astype(np.float64) - exact
        bnorm = float(np.sqrt(np.sum(exact * exact)))
        derived = {"bias_saturated": saturated, "bias_over_state": over_state,
                   "bias_max_abs_error": float(np.max(np.abs(berr))) if berr.size else 0.0,
                   "bias_rel_rms_error": float(np.sqrt(np.sum(berr * berr)) / bnorm) if bnorm > 0 else 0.0}
        for key, want in derived.items():
            got = getattr(rep, key)
            if not (got == want if isinstance(want, int) else _close(got, want)):
                raise r.fail(f"stored {got!r}, derived {want!r}", tgt.name, f"{rbase}/{key}")
        if saturated:
            messages.append(f"layer {tgt.name!r}: {saturated} bias value(s) saturated to int32")
        if over_state:
            spec = net.neurons[tgt.name]
            messages.append(f"layer {tgt.name!r}: {over_state} bias value(s) exceed the {spec.state_bits}-bit "
                            f"state range ±{spec.v_max}")
    if tuple(net.report.warnings) != tuple(messages):
        raise r.fail(f"the stored warnings {list(net.report.warnings)[:3]} differ from the derived {messages[:3]}",
                     None, "msat/report/warnings")


#: hyperparameter key → how it must agree with every neuron spec (spec attribute) when the key is recorded.
_HP_SPEC = {"k_const": "k_const", "gamma": "gamma", "sc_early": "sc_early", "sc_gate": "sc_gate",
            "frac_bits": "frac_bits", "state_bits": "state_bits", "msat_units": "units", "v_init": "v_init"}


def _check_hyperparameters(r: _Reader, net: ConvertedNetwork) -> None:
    """The settings recorded in ``provenance/hyperparameters`` (where recorded) must be those of the neuron
    specs and the program: one of the two copies was changed otherwise."""
    hp = net.provenance.hyperparameters
    method = net.provenance.method
    names = list(net.neurons)
    where_hp = "msat/provenance/hyperparameters"
    if "method" in hp and hp["method"] != method:
        raise r.fail(f"method {hp['method']!r} differs from provenance/method {method!r}", None, where_hp)
    for i, (name, spec) in enumerate(net.neurons.items()):
        base = f"msat/neurons/{i}/spec"
        if spec.mode != method:
            raise r.fail(f"mode {spec.mode!r} differs from the network's method {method!r} "
                         "(msat/provenance/method)", name, f"{base}/mode")
        for key, attr in _HP_SPEC.items():
            if key in hp:
                want, got = hp[key], getattr(spec, attr)
                if isinstance(got, float) and isinstance(want, (int, float)) and not isinstance(want, bool):
                    same = float(want) == got
                else:
                    same = want == got
                if not same:
                    raise r.fail(f"{got!r} differs from the recorded setting {key} = {want!r} ({where_hp})", name,
                                 f"{base}/{attr}")
        if "sc_p" in hp and isinstance(hp["sc_p"], dict):
            want = hp["sc_p"].get(name)
            if (want is None) != (spec.sc_p is None) or (want is not None and float(want) != spec.sc_p):
                raise r.fail(f"{spec.sc_p!r} differs from the recorded setting sc_p[{name!r}] = {want!r} "
                             f"({where_hp})", name, f"{base}/sc_p")
        model = _model(spec.mode)
        if model.layer_fields and spec.params is not None:
            derived = model.layer_params(spec.params, net.graph, name)
            if derived != spec.params:
                bad = next(k for k in model.layer_fields if getattr(derived, k) != getattr(spec.params, k))
                raise r.fail(f"{getattr(spec.params, bad)!r} differs from {getattr(derived, bad)!r}, derived from "
                             "the graph", name, f"{base}/params/{bad}")
        if hp.get("params") is not None:
            got = None if spec.params is None else spec.params.to_dict()
            want = hp["params"]
            keys = None if got is None else set(got) - set(model.layer_fields)
            if not isinstance(want, dict) or got is None or set(want) != set(got) or any(
                    want[k] != got[k] for k in keys):
                raise r.fail(f"{got!r} differs from the recorded params {want!r} ({where_hp})", name, f"{base}/params")
        elif hp.get("params", None) is None and "params" in hp and spec.params is not None:
            raise r.fail(f"{spec.params.to_dict()!r} differs from the recorded params None ({where_hp})", name,
                         f"{base}/params")
        if "coefs" in hp and spec.mode != "const" and spec.params is None:
            got = None if spec.coefs is None else spec.coefs.to_dict()
            want = hp["coefs"]
            if not isinstance(want, dict) or got is None or set(want) != set(got) or any(
                    float(want[k]) != float(got[k]) for k in got):
                raise r.fail(f"{got!r} differs from the recorded coefs {want!r} ({where_hp})", name, f"{base}/coefs")
    if "sc_p" in hp and isinstance(hp["sc_p"], dict) and set(hp["sc_p"]) - set(names):
        raise r.fail(f"sc_p names unknown layer(s) {sorted(set(hp['sc_p']) - set(names))}", None, where_hp)
    if "input_frac_bits" in hp and hp["input_frac_bits"] != net.input_frac_bits:
        raise r.fail(f"{net.input_frac_bits} differs from the recorded setting input_frac_bits = "
                     f"{hp['input_frac_bits']!r} ({where_hp})", net.graph.input.name, "msat/input/frac_bits")
    shape = hp.get("input_shape")
    if shape is not None and list(shape) != list(net.graph.input.shape):
        raise r.fail(f"{list(net.graph.input.shape)} differs from the recorded input_shape {shape!r} ({where_hp})",
                     net.graph.input.name, "msat/graph/0/shape")


def _check_netx(r: _Reader, net: ConvertedNetwork, m) -> None:
    """``/layer`` and ``/msat/netx`` must equal the view derived from ``/msat``."""
    view = netx_view(net)
    nx = r.group(m, "netx", None)
    if r.integer(nx, "loadable", None, lo=0, hi=1) != int(view.loadable):
        raise r.fail("does not match the network (derived netx view differs)", None, "msat/netx/loadable")
    if r.string(nx, "reason", None) != view.reason:
        raise r.fail("does not match the derived netx view", None, "msat/netx/reason")
    if r.integer(nx, "input_message_bits", None, lo=0) != view.input_message_bits:
        raise r.fail("does not match the derived netx view", None, "msat/netx/input_message_bits")
    groups = r.indexed(r.group(r.f, "layer", None), None)
    if len(groups) != len(view.layers):
        raise r.fail(f"expected {len(view.layers)} netx layers, found {len(groups)}", None, "layer")
    for i, (g, want) in enumerate(zip(groups, view.layers)):
        _check_netx_group(r, g, want, f"layer/{i}")


def _check_netx_group(r: _Reader, g, want: dict, layer: str) -> None:
    h5py = _h5py()
    for key, value in want.items():
        if isinstance(value, dict):
            _check_netx_group(r, r.group(g, key, layer), value, layer)
            continue
        ds, where = r.dataset(g, key, layer)
        if key == "type":
            if ds.shape != (1,) or ds.dtype.kind != "S":
                raise r.fail(f"expected a (1,) byte string, got shape {ds.shape} dtype {ds.dtype}", layer, where)
            got = r._value(ds, where, layer)[0]
            if got != value.encode("ascii"):
                raise r.fail(f"expected {value!r}, got {got!r}", layer, where)
            continue
        want_arr = np.asarray(value)
        if ds.shape != want_arr.shape or h5py.check_string_dtype(ds.dtype) is not None \
                or ds.dtype != want_arr.dtype:
            raise r.fail(f"expected shape {want_arr.shape} kind {want_arr.dtype.kind}, got shape {ds.shape} "
                         f"dtype {ds.dtype}", layer, where)
        got = np.asarray(r._value(ds, where, layer))
        if not np.array_equal(got, want_arr):
            raise r.fail("does not match the network's fixed-point program", layer, where)
    extra = set(g.keys()) - set(want)
    if extra:
        raise r.fail(f"unexpected member(s) {sorted(extra)}", layer, f"{g.name.lstrip('/')}/{sorted(extra)[0]}")


# =========================================================================================================
# the structural scan: before anything is read
# =========================================================================================================

def _allowed_filters() -> set[int]:
    h5z = _h5py().h5z
    return {h5z.FILTER_DEFLATE, h5z.FILTER_SHUFFLE, h5z.FILTER_FLETCHER32}


def _scan(r: _Reader, file_size: int) -> dict[str, str]:
    """Walk every link of the file from its metadata alone and refuse (FormatError naming the path) soft and
    external links, virtual datasets, external storage, filters other than gzip/shuffle/fletcher32 (a filter
    plugin is a shared library), committed datatypes, datatypes other than numbers, bools and strings, and
    sizes a read could not honour (see READ_BUDGET_MIN). Returns link path → 'group' | 'dataset'."""
    h5py = _h5py()
    h5o, h5l = h5py.h5o, h5py.h5l
    allowed = _allowed_filters()
    objects: list[tuple[str, int]] = []

    def visit(name, info):
        objects.append((name.decode("utf-8", "replace") if isinstance(name, bytes) else name, info.type))
        if len(objects) > _MAX_OBJECTS:
            return 1  # stop: refused below
        return None

    try:
        h5o.visit(r.f.id, visit, info=True)
    except Exception as exc:
        raise r.fail(f"cannot walk the file ({type(exc).__name__}: {exc})", None, "/") from None
    if len(objects) > _MAX_OBJECTS:
        raise r.fail(f"more than {_MAX_OBJECTS} objects", None, "/")
    kinds = {name: typ for name, typ in objects}
    groups = [""] + [name for name, typ in objects if typ == h5o.TYPE_GROUP and name != "."]
    found: dict[str, str] = {}
    for gname in groups:
        links: list[tuple[str, int]] = []

        def on_link(name, info, links=links):
            links.append((name.decode("utf-8", "replace") if isinstance(name, bytes) else name, info.type))

        try:
            gid = r.f.id if not gname else h5py.h5g.open(r.f.id, gname.encode("utf-8"))
            gid.links.iterate(on_link, info=True)
        except Exception as exc:
            raise r.fail(f"cannot list ({type(exc).__name__}: {exc})", None, gname or "/") from None
        for name, ltype in links:
            where = f"{gname}/{name}".lstrip("/")
            if ltype == h5l.TYPE_EXTERNAL:
                raise r.fail("external link refused (a network file must be self-contained)", None, where)
            if ltype == h5l.TYPE_SOFT:
                raise r.fail("soft link refused", None, where)
            if ltype != h5l.TYPE_HARD:
                raise r.fail(f"link of type {ltype} refused", None, where)
            found[where] = "link"
    total = 0
    for name, typ in objects:
        if name == ".":
            continue
        if typ == h5o.TYPE_GROUP:
            continue
        if typ != h5o.TYPE_DATASET:
            raise r.fail("unexpected object (committed datatype?): only groups and datasets", None, name)
        total += _scan_dataset(r, name, allowed, file_size)
    for where in found:
        found[where] = "group" if kinds.get(where) == h5o.TYPE_GROUP else "dataset"
    budget = max(READ_BUDGET_MIN, READ_BUDGET_RATIO * file_size)
    if total > budget:
        raise r.fail(f"the datasets declare {total} bytes together, more than a {file_size}-byte network file can "
                     f"hold (limit {budget})", None, "/")
    return found


def _scan_dataset(r: _Reader, where: str, allowed: set[int], file_size: int) -> int:
    h5py = _h5py()
    h5d = h5py.h5d
    try:
        dsid = h5d.open(r.f.id, where.encode("utf-8"))
        dcpl = dsid.get_create_plist()
        if dcpl.get_layout() == h5d.VIRTUAL:
            raise r.fail("virtual dataset refused (its data would come from other files)", None, where)
        if dcpl.get_external_count():
            raise r.fail("external storage refused (a network file must be self-contained)", None, where)
        for k in range(dcpl.get_nfilters()):
            code = dcpl.get_filter(k)[0]
            if code not in allowed:
                raise r.fail(f"HDF5 filter {code} refused (only gzip, shuffle and fletcher32)", None, where)
        dtype = dsid.dtype
        if h5py.check_string_dtype(dtype) is None and dtype.kind not in "iufb":
            raise r.fail(f"datatype {dtype} refused (numbers, bools and strings only)", None, where)
        space = dsid.get_space()
        if space.get_simple_extent_type() == h5py.h5s.NULL:
            return 0
        count = int(space.get_simple_extent_npoints())
        shape = space.shape
        if count > _MAX_ELEMENTS:
            raise r.fail(f"declares {count} elements (shape {shape}), implausibly large", None, where)
        nbytes = count * max(int(dtype.itemsize), 1)
        stored = int(dsid.get_storage_size())
    except FormatError:
        raise
    except Exception as exc:
        raise r.fail(f"unreadable metadata ({type(exc).__name__}: {exc})", None, where) from None
    if stored > file_size:
        raise r.fail(f"claims {stored} stored bytes in a {file_size}-byte file", None, where)
    if nbytes > MAX_EXPANSION * stored + 4096:
        raise r.fail(f"declares {nbytes} bytes (shape {shape}) but stores only {stored}: refused before reading",
                     None, where)
    return nbytes


def _check_unexpected(r: _Reader, found: dict[str, str]) -> None:
    """Every member of the file must have been read: anything else is refused, not ignored."""
    extra = sorted(set(found) - r.visited)
    if extra:
        raise r.fail(f"unexpected member(s) {extra[:4]}{' ...' if len(extra) > 4 else ''} (not part of format "
                     f"{'.'.join(map(str, r.version))}; refused rather than ignored)", None, extra[0])


def read(path: str | os.PathLike) -> ConvertedNetwork:
    """Read and validate a network file written by :func:`write` (any 1.x version).

    Raises :class:`FormatError` (path, layer, field) for every problem, including a missing file, a file
    that is not HDF5 and a truncated file.
    """
    def body(r: _Reader, found: dict[str, str]) -> ConvertedNetwork:
        net = _read_network(r)
        _check_digest(r, found, before=lambda: _check_unexpected(r, found))
        return net

    return read_scanned(path, body)


def read_scanned(path: str | os.PathLike, body: Callable[[Any, dict[str, str]], Any]) -> Any:
    """Open the untrusted HDF5 file ``path``, walk its metadata with :func:`_scan` (links, virtual / external
    storage, filters, declared sizes) before any data is read, then return ``body(reader, found)`` (found: member
    path → 'group' | 'dataset'). Every failure — missing file, not HDF5, truncated, anything unforeseen — is a
    FormatError naming the file. Shared by this reader, the netx peer reader and the NIR reader."""
    h5py = _h5py()
    spath = str(path)
    if not os.path.exists(spath):
        raise FormatError("no such file", path=spath)
    if not os.path.isfile(spath):
        raise FormatError("not a regular file", path=spath)
    try:
        f = h5py.File(spath, "r")
    except Exception as exc:
        raise FormatError(f"not a readable HDF5 file ({type(exc).__name__}: {exc})", path=spath) from None
    try:
        with f:
            r = _Reader(f, spath)
            return body(r, _scan(r, os.path.getsize(spath)))
    except FormatError:
        raise
    except Exception as exc:  # anything unforeseen is still a format problem
        raise FormatError(f"unreadable ({type(exc).__name__}: {exc})", path=spath) from None


#: The dataset holding the content digest (format ≥ 1.3); see :func:`_digest`.
DIGEST_FIELD = "msat/digest"
DIGEST_SINCE = (1, 3)


def _hash_dataset(digest, name: str, obj) -> None:
    digest.update(f"dataset {name} {obj.dtype.str} {obj.shape}\n".encode())
    if obj.shape is None:  # empty (null dataspace): None
        return
    value = np.asarray(obj[()])
    if value.dtype == object:
        for item in value.reshape(-1):
            text = item if isinstance(item, bytes) else str(item).encode()
            digest.update(len(text).to_bytes(8, "little") + text)
    else:
        digest.update(np.ascontiguousarray(value).tobytes())


def _digest(f, members: dict[str, str]) -> str:
    """``'sha256:<hex>'`` over every member path (link path → 'group' | 'dataset') except
    :data:`DIGEST_FIELD`, in sorted order: each group's path, each dataset's path, dtype, shape and values
    (the encoding of :func:`content_hash`).

    Why: every field of a network file is checked against a derivation except ``provenance/seed`` (any
    32-bit value is a valid seed of the spike-confidence gate, and a changed seed is another valid network
    with other predictions). The digest ties every field, the seed included, to what the writer wrote, so a
    single changed dataset is refused instead of silently simulating another network. It protects against
    corruption and careless edits, not against an author who rewrites the digest too (a network file is not
    signed; docs/SECURITY.md)."""
    digest = hashlib.sha256()
    for name in sorted(members):
        if name == DIGEST_FIELD:
            continue
        if members[name] == "group":
            digest.update(f"group {name}\n".encode())
        else:
            _hash_dataset(digest, name, f[name])
    return "sha256:" + digest.hexdigest()


def _check_digest(r: _Reader, found: dict[str, str], before: Callable[[], None]) -> None:
    """Files of format ≥ 1.3 must hold :data:`DIGEST_FIELD`, equal to :func:`_digest` of their content
    (checked after every other validation, so a field with its own check is named by that check). Older
    files have none (and a digest in one is refused as an unexpected member)."""
    if r.version < DIGEST_SINCE:
        before()
        return
    m = r.f["msat"]
    stored = r.string(m, "digest", None)
    before()  # members outside the format are named as such, before the digest that covers them
    if not stored.startswith("sha256:") or len(stored) != 71:
        raise r.fail(f"expected 'sha256:' and 64 hex digits, got {stored[:80]!r}", None, DIGEST_FIELD)
    try:
        derived = _digest(r.f, found)
    except Exception as exc:
        raise r.fail(f"cannot compute the content digest ({type(exc).__name__}: {exc})", None, DIGEST_FIELD) \
            from None
    if stored != derived:
        raise r.fail("does not match the file's content (sha256 of every other dataset): the file was changed "
                     "after it was written", None, DIGEST_FIELD)


def content_hash(path: str | os.PathLike) -> str:
    """sha256 (hex) of a network file's content: every group and dataset path in sorted order, with each
    dataset's dtype, shape and values (strings as UTF-8). Files that store the same network hash alike
    whatever their HDF5 layout (chunking, compression, object addresses, timestamps); no validation.
    """
    h5py = _h5py()
    digest = hashlib.sha256()
    with h5py.File(str(path), "r") as f:
        items: list[tuple[str, Any]] = []
        f.visititems(lambda name, obj: items.append((name, obj)))
        for name, obj in sorted(items, key=lambda item: item[0]):
            if not isinstance(obj, h5py.Dataset):
                digest.update(f"group {name}\n".encode())
                continue
            _hash_dataset(digest, name, obj)
    return digest.hexdigest()
