"""Network descriptions the partitioner reads: layers (neuron groups) and the synaptic paths between them.

A :class:`NetDesc` is a list of :class:`LayerDesc` in topological order. A layer is one neuron group of shape
(C, H, W) or (N,) with a neuron ``model`` (cuba | sdn | msat | const | lipool | readout | input) and the
:class:`Conn` paths that feed it. A path is a chain of :class:`PathOp` from the source's output to the layer's
input, in application order: ``conv`` (kernel, stride, padding, groups), ``linear``, ``gain`` (one-to-one),
``subsample`` (step), ``chanpad`` (before, after), ``sumpool`` / ``window`` (kernel, stride, padding),
``flatten``. ``window`` is LIPool's per-window fan-in (one unit-weight synapse per window element).

Built from a converted network (:func:`from_program`) or by hand for topologies we do not have weights for
(:mod:`msat_lava.loihi2.calibration`). Nothing here depends on weights: the plan is a function of shapes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

__all__ = ["PathOp", "Conn", "LayerDesc", "NetDesc", "from_program", "conv_out", "chain", "table_entries"]

Shape = tuple[int, ...]
MODELS = ("input", "cuba", "sdn", "msat", "const", "lipool", "readout")


@dataclass(frozen=True)
class PathOp:
    kind: str
    in_shape: Shape
    out_shape: Shape
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Conn:
    """One synaptic path ``source`` → the layer. ``delay``: its synapses carry a delay field."""

    source: str
    ops: tuple[PathOp, ...]
    delay: bool = False

    @property
    def weighted(self) -> PathOp | None:
        for op in self.ops:
            if op.kind in ("conv", "linear", "gain", "window"):
                return op
        return None


@dataclass(frozen=True)
class LayerDesc:
    """One neuron group. ``slots``: neuron slots per neuron, overriding the model's (LIPool: one accumulator per
    window element); ``lut_entries``: 32-bit table entries of a microcoded model (MSAT's threshold LUTs)."""

    name: str
    model: str
    shape: Shape
    conns: tuple[Conn, ...] = ()
    slots: int | None = None
    lut_entries: int = 0

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"layer {self.name!r}: unknown neuron model {self.model!r}")

    @property
    def neurons(self) -> int:
        n = 1
        for s in self.shape:
            n *= int(s)
        return n


@dataclass(frozen=True)
class NetDesc:
    name: str
    layers: tuple[LayerDesc, ...]
    input_shape: Shape
    input_name: str = "input"

    def layer(self, name: str) -> LayerDesc:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def consumers(self, name: str) -> list[tuple[LayerDesc, Conn]]:
        return [(layer, c) for layer in self.layers for c in layer.conns if c.source == name]

    def source_shape(self, name: str) -> Shape:
        return self.input_shape if name == self.input_name else self.layer(name).shape


# ------------------------------------------------------------------------------------------------- helpers
def conv_out(size: int, k: int, s: int, p: int) -> int:
    """Output length of a conv / pool axis: floor((size + 2p − k) / s) + 1."""
    return (size + 2 * p - k) // s + 1


def chain(name: str, source: str, in_shape: Shape, spec: Sequence[tuple], model: str = "cuba",
          delay: bool = False) -> tuple[list[LayerDesc], str, Shape]:
    """Helper for hand-built topologies: ``spec`` items ('conv', C_out, k, stride, padding) with k/stride/padding
    ints or (h, w) pairs, ('flatten',), ('dense', N). Returns (layers, last layer name, last shape)."""
    def pair(v):
        return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))

    layers: list[LayerDesc] = []
    shape, src, pending = tuple(in_shape), source, []
    for i, item in enumerate(spec):
        if item[0] == "flatten":
            n = 1
            for s in shape:
                n *= s
            pending.append(PathOp("flatten", shape, (n,)))
            shape = (n,)
            continue
        if item[0] == "conv":
            _, cout, k, st, pd = item
            (kh, kw), (sh, sw), (ph, pw) = pair(k), pair(st), pair(pd)
            out = (int(cout), conv_out(shape[1], kh, sh, ph), conv_out(shape[2], kw, sw, pw))
            op = PathOp("conv", shape, out, {"kernel": (kh, kw), "stride": (sh, sw), "padding": (ph, pw),
                                             "groups": 1})
        elif item[0] == "dense":
            out = (int(item[1]),)
            op = PathOp("linear", shape, out)
        else:
            raise ValueError(f"unknown item {item!r}")
        lname = f"{name}{len(layers)}"
        layers.append(LayerDesc(lname, model, out, (Conn(src, tuple(pending) + (op,), delay),)))
        src, shape, pending = lname, out, []
    return layers, src, shape


def _op_from_program(op: Any) -> PathOp:
    k, p = op.kind, dict(op.params)
    if k == "conv":
        w = op.mant if op.mant is not None else op.weight
        kernel = tuple(int(s) for s in w.shape[2:])
        return PathOp("conv", tuple(op.in_shape), tuple(op.out_shape),
                      {"kernel": kernel, "stride": tuple(p["stride"]), "padding": tuple(p["padding"]),
                       "groups": int(p["groups"])})
    if k == "sumpool":
        return PathOp("sumpool", tuple(op.in_shape), tuple(op.out_shape),
                      {"kernel": tuple(p["kernel"]), "stride": tuple(p["stride"]), "padding": tuple(p["padding"])})
    if k == "subsample":
        return PathOp("subsample", tuple(op.in_shape), tuple(op.out_shape), {"step": tuple(p["step"])})
    if k == "chanpad":
        return PathOp("chanpad", tuple(op.in_shape), tuple(op.out_shape),
                      {"before": int(p["before"]), "after": int(p["after"])})
    if k in ("flatten", "linear", "gain"):
        return PathOp(k, tuple(op.in_shape), tuple(op.out_shape))
    raise ValueError(f"op {op.node!r}: kind {k!r} has no hardware mapping")


def table_entries(tables: Any) -> int:
    """Entries of a layer's tables (MSAT's ThresholdLuts, or a registry model's tables): the total size of
    its array attributes (0 for None)."""
    if tables is None:
        return 0
    import numpy as np

    fields = getattr(tables, "__dataclass_fields__", None)
    names = list(fields) if fields else [k for k in vars(tables)]
    return int(sum(np.asarray(getattr(tables, k)).size for k in names
                   if isinstance(getattr(tables, k), np.ndarray)))


def from_program(program: Any, name: str = "network") -> NetDesc:
    """The network description of a :class:`msat_lava.program.Program` (one layer per stage, plus the input).

    Neuron stages get model 'const' or 'msat' (every other mode: a microcoded neuron with tables — the MSAT
    family dtt/det/msat and the registry's other models, which share MSAT's slot count); LIPool
    stages 'lipool' with one accumulator slot per window element (C·Ho·Wo neurons × kH·kW slots); the readout
    'readout'. Terms become :class:`Conn` paths (their structural ops kept, the weighted op last)."""
    layers = [LayerDesc("input", "input", tuple(program.input_shape))]
    for s in program.stages:
        if s.kind == "lipool":
            src_shape = program.source_shape(s.source)
            op = PathOp("window", tuple(src_shape), tuple(s.shape),
                        {"kernel": tuple(s.kernel), "stride": tuple(s.stride), "padding": tuple(s.padding)})
            layers.append(LayerDesc(s.name, "lipool", tuple(s.shape), (Conn(s.source, (op,)),),
                                    slots=int(s.kernel[0] * s.kernel[1])))
            continue
        conns = tuple(Conn(t.source, tuple(_op_from_program(o) for o in t.ops)) for t in s.terms)
        if s.kind == "readout":
            layers.append(LayerDesc(s.name, "readout", tuple(s.shape), conns))
        else:
            mode = s.spec.mode
            lut = table_entries(s.luts) if mode != "const" else 0
            layers.append(LayerDesc(s.name, "const" if mode == "const" else "msat", tuple(s.shape), conns,
                                    lut_entries=lut))
    return NetDesc(name, tuple(layers), tuple(program.input_shape))
