"""Typed network graph (IR): frozen, validated node dataclasses and a topologically ordered Graph.

A node computes one tensor per sample (no batch axis): shape ``(C, H, W)`` for feature maps or
``(F,)`` for vectors. ``Graph.shapes()`` infers every node's output shape and rejects
inconsistencies with :class:`~netx_export.errors.GraphError` naming the node and field.

ANN meaning of each kind (the SNN meaning is in docs/DESIGN.md §2):

* ``Input``      y = x (the normalized image)
* ``Conv``       y = conv2d(x, W, b, stride, padding, groups) (cross-correlation, torch semantics)
* ``Linear``     y = W x + b
* ``Relu``       y = max(0, x)                      -> spiking neuron layer in the SNN
* ``MaxPool``    y = maxpool2d(x, kernel, stride, padding) -> LIPooling in the SNN
* ``AvgPool``    y = avgpool2d(x, kernel, stride, padding), count_include_pad=True
* ``Flatten``    y = x.reshape(-1) (C-order)
* ``Add``        y = Σ inputs
* ``Subsample``  y = x[:, ::sh, ::sw]
* ``ChanPad``    y = zeros(before) ++ x ++ zeros(after) along the channel axis

Every node serializes with ``to_dict()`` to plain Python scalars, tuples and numpy arrays, and
``node_from_dict`` / ``Graph.from_dict`` invert it exactly.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator, Mapping

import numpy as np

from netx_export.errors import GraphError

Shape = tuple[int, ...]
Pair = tuple[int, int]


def _pair(value: Any, *, node: str, name: str, minimum: int) -> Pair:
    if isinstance(value, (int, np.integer)):
        value = (int(value), int(value))
    try:
        pair = tuple(int(v) for v in value)
    except TypeError as exc:
        raise GraphError(f"expected an int or a pair of ints, got {value!r}", node=node, field=name) from exc
    if len(pair) != 2 or any(v < minimum for v in pair):
        raise GraphError(f"expected a pair of ints >= {minimum}, got {value!r}", node=node, field=name)
    return pair  # type: ignore[return-value]


def _array(value: Any, *, node: str, name: str, ndim: int) -> np.ndarray:
    arr = np.array(value, dtype=np.float64, copy=True)
    if arr.ndim != ndim:
        raise GraphError(f"expected a {ndim}-D array, got shape {arr.shape}", node=node, field=name)
    if not np.all(np.isfinite(arr)):
        raise GraphError("contains NaN or infinity", node=node, field=name)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class Node:
    """Base node: a unique ``name`` and the names of its ``inputs`` (earlier nodes)."""

    kind: ClassVar[str] = ""
    arity: ClassVar[tuple[int, int | None]] = (1, 1)  # (min, max) number of inputs

    name: str
    inputs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            raise GraphError("name must be a non-empty string without '/'", node=str(self.name), field="name")
        object.__setattr__(self, "inputs", tuple(str(i) for i in self.inputs))
        lo, hi = self.arity
        n = len(self.inputs)
        if n < lo or (hi is not None and n > hi):
            want = f"{lo}" if lo == hi else f"{lo}..{hi if hi is not None else 'n'}"
            raise GraphError(f"{self.kind} takes {want} input(s), got {n}", node=self.name, field="inputs")

    # -- serialization -----------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """Kind-specific fields (everything except kind, name, inputs)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("name", "inputs")}

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "inputs": tuple(self.inputs), **self.params()}

    def out_shape(self, in_shapes: list[Shape]) -> Shape:  # pragma: no cover - overridden
        raise NotImplementedError

    # -- equality that understands arrays ----------------------------------------------
    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        a, b = self.to_dict(), other.to_dict()  # type: ignore[union-attr]
        return a.keys() == b.keys() and all(_value_equal(a[k], b[k]) for k in a)

    def __hash__(self) -> int:
        return hash((self.kind, self.name, self.inputs))


def _value_equal(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if a is None or b is None:
            return a is b
        a, b = np.asarray(a), np.asarray(b)
        return a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b))
    return a == b


def _require_map(shape: Shape, node: str) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise GraphError(f"expects a (C, H, W) input, got shape {shape}", node=node, field="inputs")
    return shape  # type: ignore[return-value]


def _pool_out(size: int, k: int, s: int, p: int, node: str) -> int:
    out = (size + 2 * p - k) // s + 1
    if out < 1:
        raise GraphError(f"window {k} with padding {p} does not fit input size {size}", node=node)
    return out


@dataclass(frozen=True, eq=False)
class Input(Node):
    kind: ClassVar[str] = "input"
    arity: ClassVar[tuple[int, int | None]] = (0, 0)
    shape: Shape = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        shape = tuple(int(s) for s in self.shape)
        if len(shape) not in (1, 3) or any(s < 1 for s in shape):
            raise GraphError(f"shape must be (F,) or (C, H, W) with positive sizes, got {self.shape!r}",
                             node=self.name, field="shape")
        object.__setattr__(self, "shape", shape)

    def out_shape(self, in_shapes: list[Shape]) -> Shape:
        return self.shape


@dataclass(frozen=True, eq=False)
class Conv(Node):
    kind: ClassVar[str] = "conv"
    weight: np.ndarray = field(default_factory=lambda: np.zeros((1, 1, 1, 1)))
    bias: np.ndarray | None = None
    stride: Pair = (1, 1)
    padding: Pair = (0, 0)
    groups: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        w = _array(self.weight, node=self.name, name="weight", ndim=4)
        object.__setattr__(self, "weight", w)
        if self.bias is not None:
            b = _array(self.bias, node=self.name, name="bias", ndim=1)
            if b.shape[0] != w.shape[0]:
                raise GraphError(f"bias has {b.shape[0]} entries for {w.shape[0]} output channels",
                                 node=self.name, field="bias")
            object.__setattr__(self, "bias", b)
        object.__setattr__(self, "stride", _pair(self.stride, node=self.name, name="stride", minimum=1))
        object.__setattr__(self, "padding", _pair(self.padding, node=self.name, name="padding", minimum=0))
        groups = int(self.groups)
        if groups < 1 or w.shape[0] % groups:
            raise GraphError(f"groups={self.groups} must divide {w.shape[0]} output channels",
                             node=self.name, field="groups")
        object.__setattr__(self, "groups", groups)

    def out_shape(self, in_shapes: list[Shape]) -> Shape:
        c, h, w = _require_map(in_shapes[0], self.name)
        cout, cin_g, kh, kw = self.weight.shape
        if c != cin_g * self.groups:
            raise GraphError(f"weight expects {cin_g * self.groups} input channels, input has {c}",
                             node=self.name, field="weight")
        return (cout, _pool_out(h, kh, self.stride[0], self.padding[0], self.name),
                _pool_out(w, kw, self.stride[1], self.padding[1], self.name))


@dataclass(frozen=True, eq=False)
class Linear(Node):
    kind: ClassVar[str] = "linear"
    weight: np.ndarray = field(default_factory=lambda: np.zeros((1, 1)))
    bias: np.ndarray | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        w = _array(self.weight, node=self.name, name="weight", ndim=2)
        object.__setattr__(self, "weight", w)
        if self.bias is not None:
            b = _array(self.bias, node=self.name, name="bias", ndim=1)
            if b.shape[0] != w.shape[0]:
                raise GraphError(f"bias has {b.shape[0]} entries for {w.shape[0]} outputs",
                                 node=self.name, field="bias")
            object.__setattr__(self, "bias", b)

    def out_shape(self, in_shapes: list[Shape]) -> Shape:
        shape = in_shapes[0]
        if len(shape) != 1:
            raise GraphError(f"expects a vector input, got shape {shape} (add a flatten)",
                             node=self.name, field="inputs")
        if shape[0] != self.weight.shape[1]:
            raise GraphError(f"weight expects {self.weight.shape[1]} inputs, input has {shape[0]}",
                             node=self.name, field="weight")
        return (self.weight.shape[0],)


@dataclass(frozen=True, eq=False)
class Relu(Node):
    kind: ClassVar[str] = "relu"

    def out_shape(self, in_shapes: list[Shape]) -> Shape:
        return in_shapes[0]


@dataclass(frozen=True, eq=False)
class _Pool(Node):
    kernel: Pair = (2, 2)
    stride: Pair = (2, 2)
    padding: Pair = (0, 0)

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "kernel", _pair(self.kernel, node=self.name, name="kernel", minimum=1))
        object.__setattr__(self, "stride", _pair(self.stride, node=self.name, name="stride", minimum=1))
        object.__setattr__(self, "padding", _pair(self.padding, node=self.name, name="padding", minimum=0))
        if any(2 * p > k for p, k in zip(self.padding, self.kernel)):
            raise GraphError("padding must be at most half the kernel", node=self.name, field="padding")

    def out_shape(self, in_shapes: list[Shape]) -> Shape:
        c, h, w = _require_map(in_shapes[0], self.name)
        return (c, _pool_out(h, self.kernel[0], self.stride[0], self.padding[0], self.name),
                _pool_out(w, self.kernel[1], self.stride[1], self.padding[1], self.name))


@dataclass(frozen=True, eq=False)
class MaxPool(_Pool):
    kind: ClassVar[str] = "maxpool"


@dataclass(frozen=True, eq=False)
class AvgPool(_Pool):
    kind: ClassVar[str] = "avgpool"


@dataclass(frozen=True, eq=False)
class Flatten(Node):
    kind: ClassVar[str] = "flatten"

    def out_shape(self, in_shapes: list[Shape]) -> Shape:
        return (int(np.prod(in_shapes[0])),)


@dataclass(frozen=True, eq=False)
class Add(Node):
    kind: ClassVar[str] = "add"
    arity: ClassVar[tuple[int, int | None]] = (2, None)

    def out_shape(self, in_shapes: list[Shape]) -> Shape:
        if any(s != in_shapes[0] for s in in_shapes):
            raise GraphError(f"inputs have different shapes {in_shapes}", node=self.name, field="inputs")
        return in_shapes[0]


@dataclass(frozen=True, eq=False)
class Subsample(Node):
    kind: ClassVar[str] = "subsample"
    step: Pair = (2, 2)

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "step", _pair(self.step, node=self.name, name="step", minimum=1))

    def out_shape(self, in_shapes: list[Shape]) -> Shape:
        c, h, w = _require_map(in_shapes[0], self.name)
        return (c, -(-h // self.step[0]), -(-w // self.step[1]))


@dataclass(frozen=True, eq=False)
class ChanPad(Node):
    kind: ClassVar[str] = "chanpad"
    before: int = 0
    after: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("before", "after"):
            value = int(getattr(self, name))
            if value < 0:
                raise GraphError("must be >= 0", node=self.name, field=name)
            object.__setattr__(self, name, value)

    def out_shape(self, in_shapes: list[Shape]) -> Shape:
        c, h, w = _require_map(in_shapes[0], self.name)
        return (c + self.before + self.after, h, w)


NODE_TYPES: dict[str, type[Node]] = {
    cls.kind: cls for cls in (Input, Conv, Linear, Relu, MaxPool, AvgPool, Flatten, Add, Subsample, ChanPad)
}
LINEAR_KINDS = frozenset({"conv", "linear", "avgpool", "flatten", "add", "subsample", "chanpad"})
STATEFUL_KINDS = frozenset({"relu", "maxpool"})
WEIGHTED_KINDS = frozenset({"conv", "linear"})


def node_from_dict(data: Mapping[str, Any]) -> Node:
    """Inverse of ``Node.to_dict``; raises GraphError for an unknown kind or bad field."""
    data = dict(data)
    kind = data.pop("kind", None)
    cls = NODE_TYPES.get(kind)  # type: ignore[arg-type]
    name = str(data.get("name", "?"))
    if cls is None:
        raise GraphError(f"unknown node kind {kind!r}", node=name, field="kind")
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - allowed
    if unknown:
        raise GraphError(f"unknown field(s) {sorted(unknown)} for kind {kind!r}", node=name,
                         field=sorted(unknown)[0])
    try:
        return cls(**data)
    except GraphError:
        raise
    except (TypeError, ValueError) as exc:
        raise GraphError(str(exc), node=name) from exc


@dataclass(frozen=True, eq=False)
class Graph:
    """Nodes in topological order; the last node is the output."""

    nodes: tuple[Node, ...]

    def __post_init__(self) -> None:
        nodes = tuple(self.nodes)
        object.__setattr__(self, "nodes", nodes)
        if not nodes:
            raise GraphError("a graph needs at least one node")
        seen: set[str] = set()
        for node in nodes:
            if not isinstance(node, Node):
                raise GraphError(f"not a Node: {node!r}")
            if node.name in seen:
                raise GraphError("duplicate node name", node=node.name, field="name")
            for src in node.inputs:
                if src not in seen:
                    known = src in {n.name for n in nodes}
                    raise GraphError(
                        f"input {src!r} {'comes later (cycle or not topologically ordered)' if known else 'does not exist'}",
                        node=node.name, field="inputs")
            seen.add(node.name)
        inputs = [n for n in nodes if isinstance(n, Input)]
        if len(inputs) != 1:
            raise GraphError(f"a graph needs exactly one input node, found {len(inputs)}")
        object.__setattr__(self, "_shapes", self._infer_shapes())

    # -- access --------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def __contains__(self, name: object) -> bool:
        """True when a node of that name exists."""
        return any(node.name == name for node in self.nodes)

    def __getitem__(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    @property
    def input(self) -> Input:
        return next(n for n in self.nodes if isinstance(n, Input))  # type: ignore[return-value]

    @property
    def output(self) -> Node:
        return self.nodes[-1]

    def consumers(self, name: str) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if name in n.inputs)

    def shapes(self) -> dict[str, Shape]:
        return dict(self._shapes)  # type: ignore[attr-defined]

    def shape(self, name: str) -> Shape:
        return self._shapes[name]  # type: ignore[attr-defined]

    def _infer_shapes(self) -> dict[str, Shape]:
        shapes: dict[str, Shape] = {}
        for node in self.nodes:
            shapes[node.name] = tuple(node.out_shape([shapes[i] for i in node.inputs]))
        return shapes

    # -- serialization -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"nodes": [n.to_dict() for n in self.nodes]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Graph":
        if "nodes" not in data:
            raise GraphError("missing 'nodes'", field="nodes")
        return cls(tuple(node_from_dict(d) for d in data["nodes"]))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Graph):
            return NotImplemented
        return len(self.nodes) == len(other.nodes) and all(a == b for a, b in zip(self.nodes, other.nodes))

    def __hash__(self) -> int:
        return hash(tuple(n.name for n in self.nodes))

    def replace(self, nodes: tuple[Node, ...]) -> "Graph":
        return Graph(nodes)
