"""BatchNorm folding and graph cleanup passes.

Everything here is a pure function: arrays in, arrays out, or ``Graph`` in, ``Graph`` out. None of the
passes changes what the graph computes as an ANN (``netx_export.ann``): they only remove work that is
the identity, merge chains of structural ops, and drop nodes that do not reach the output.

* :func:`fold_batchnorm` / :func:`fold_bn_into` — ALGORITHMS §1.6: an eval-mode BatchNorm after a
  conv/linear becomes part of that op's weight and bias.
* :func:`remove_dead_nodes` — nodes that do not reach the output (the input node always stays).
* :func:`remove_identities` — nodes whose output equals their input: a ``flatten`` of a vector (this also
  merges consecutive flattens), ``subsample`` with step (1, 1), ``chanpad`` with 0/0, ``avgpool`` with a
  1×1 window, stride 1 and no padding, and a ``relu`` whose input is already a ``relu`` output.
* :func:`merge_structural` — ``subsample`` of a ``subsample`` (steps multiply) and ``chanpad`` of a
  ``chanpad`` (paddings add) become one node, when the inner node feeds nothing else.
* :func:`merge_adds` — an ``add`` that feeds only another ``add`` is inlined into it (Σ is associative).
* :func:`simplify` — all of the above until nothing changes. Idempotent.

Names: a pass never invents a name; when two nodes merge, the outer (later) node keeps its name and
when an identity is removed its consumers read its input instead.
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from netx_export import ir
from netx_export.errors import GraphError

__all__ = [
    "fold_batchnorm", "fold_bn_into", "remove_dead_nodes", "remove_identities", "merge_structural",
    "merge_adds", "simplify", "is_identity",
]


# ---------------------------------------------------------------------------------------------
# BatchNorm folding (ALGORITHMS §1.6)
# ---------------------------------------------------------------------------------------------
def fold_batchnorm(weight: np.ndarray, bias: np.ndarray | None, *, mean: np.ndarray, var: np.ndarray,
                   eps: float, gamma: np.ndarray | None = None, beta: np.ndarray | None = None,
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Fold an eval-mode BatchNorm into the preceding conv/linear (float64).

    With ``s_c = γ_c / sqrt(σ²_c + ε)`` per output channel c (γ = 1, β = 0 when the BatchNorm has no
    affine parameters, b = 0 when the op has no bias) returns ``(W', b')`` with
    ``W'_c = s_c · W_c`` (the whole filter / row of channel c) and ``b'_c = s_c · (b_c − μ_c) + β_c``.
    ``weight`` has the output channel on axis 0 (conv: (Cout, Cin/g, kH, kW); linear: (out, in)).
    """
    w = np.asarray(weight, dtype=np.float64)
    cout = w.shape[0]

    def vec(value, default: float, name: str) -> np.ndarray:
        if value is None:
            return np.full(cout, default, dtype=np.float64)
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
        if arr.shape != (cout,):
            raise GraphError(f"BatchNorm {name} has {arr.size} entries for {cout} channels", field=name)
        return arr

    mu, sigma2 = vec(mean, 0.0, "running_mean"), vec(var, 1.0, "running_var")
    g, b_bn, b = vec(gamma, 1.0, "weight"), vec(beta, 0.0, "bias"), vec(bias, 0.0, "bias")
    if np.any(sigma2 + float(eps) <= 0):
        raise GraphError("BatchNorm running_var + eps must be positive", field="running_var")
    s = g / np.sqrt(sigma2 + float(eps))
    w_folded = w * s.reshape((cout,) + (1,) * (w.ndim - 1))
    b_folded = s * (b - mu) + b_bn
    return w_folded, b_folded


def fold_bn_into(node: ir.Conv | ir.Linear, *, mean: np.ndarray, var: np.ndarray, eps: float,
                 gamma: np.ndarray | None = None, beta: np.ndarray | None = None) -> ir.Conv | ir.Linear:
    """Return a copy of ``node`` (same name, inputs and geometry) with the BatchNorm folded in
    (:func:`fold_batchnorm`); the result always has a bias."""
    if not isinstance(node, (ir.Conv, ir.Linear)):
        raise GraphError(f"BatchNorm can only be folded into conv or linear, not {node.kind}", node=node.name)
    try:
        w, b = fold_batchnorm(node.weight, node.bias, mean=mean, var=var, eps=eps, gamma=gamma, beta=beta)
    except GraphError as exc:
        raise GraphError(exc.detail, node=node.name, field=exc.field) from None
    params = node.params()
    params.update(weight=w, bias=b)
    return type(node)(name=node.name, inputs=node.inputs, **params)


# ---------------------------------------------------------------------------------------------
# graph passes
# ---------------------------------------------------------------------------------------------
def _with_inputs(node: ir.Node, inputs: tuple[str, ...]) -> ir.Node:
    if inputs == node.inputs:
        return node
    return type(node)(name=node.name, inputs=inputs, **node.params())


def _rebuild(graph: ir.Graph, keep: list[ir.Node], rename: Mapping[str, str]) -> ir.Graph:
    """Nodes ``keep`` with every input resolved through ``rename`` (chains followed)."""

    def resolve(name: str) -> str:
        seen = set()
        while name in rename:
            if name in seen:  # pragma: no cover - defensive
                raise GraphError("rename cycle", node=name)
            seen.add(name)
            name = rename[name]
        return name

    nodes = [_with_inputs(n, tuple(resolve(i) for i in n.inputs)) for n in keep]
    return ir.Graph(tuple(nodes))


def remove_dead_nodes(graph: ir.Graph) -> ir.Graph:
    """Drop every node that does not reach the output (the last node); the input node always stays."""
    live = {graph.output.name, graph.input.name}
    for node in reversed(graph.nodes):
        if node.name in live:
            live.update(node.inputs)
    if len(live) == len(graph.nodes):
        return graph
    return ir.Graph(tuple(n for n in graph.nodes if n.name in live))


def is_identity(node: ir.Node, graph: ir.Graph) -> bool:
    """True when ``node`` outputs exactly its (single) input in the ANN: see the module docstring."""
    if isinstance(node, ir.Flatten):
        return len(graph.shape(node.inputs[0])) == 1
    if isinstance(node, ir.Subsample):
        return node.step == (1, 1)
    if isinstance(node, ir.ChanPad):
        return node.before == 0 and node.after == 0
    if isinstance(node, ir.AvgPool):
        return node.kernel == (1, 1) and node.stride == (1, 1) and node.padding == (0, 0)
    if isinstance(node, ir.Relu):
        return isinstance(graph[node.inputs[0]], ir.Relu)
    return False


def remove_identities(graph: ir.Graph) -> ir.Graph:
    """Remove identity-like nodes (:func:`is_identity`); consumers read the removed node's input.

    Dead nodes are removed first, so that when the output itself is removed its input is the last node.
    """
    graph = remove_dead_nodes(graph)  # then the output's input is the last node left when it goes
    rename: dict[str, str] = {}
    keep = []
    for node in graph.nodes:
        if not isinstance(node, ir.Input) and len(node.inputs) == 1 and is_identity(node, graph):
            rename[node.name] = node.inputs[0]
        else:
            keep.append(node)
    if not rename:
        return graph
    return _rebuild(graph, keep, rename)


def _single_consumer(graph: ir.Graph, name: str) -> bool:
    return name != graph.output.name and sum(n.inputs.count(name) for n in graph.nodes) == 1


def merge_structural(graph: ir.Graph) -> ir.Graph:
    """Merge ``subsample∘subsample`` (steps multiply: x[::a][::b] = x[::a·b]) and ``chanpad∘chanpad``
    (paddings add) when the inner node feeds only the outer one. The outer node keeps its name."""
    nodes = {n.name: n for n in graph.nodes}
    drop: set[str] = set()
    replaced: dict[str, ir.Node] = {}
    for node in graph.nodes:
        node = replaced.get(node.name, node)
        if not isinstance(node, (ir.Subsample, ir.ChanPad)):
            continue
        inner = replaced.get(node.inputs[0], nodes[node.inputs[0]])
        if type(inner) is not type(node) or not _single_consumer(graph, inner.name):
            continue
        if isinstance(node, ir.Subsample):
            new = ir.Subsample(node.name, inner.inputs,
                               step=(node.step[0] * inner.step[0], node.step[1] * inner.step[1]))
        else:
            new = ir.ChanPad(node.name, inner.inputs, before=node.before + inner.before,
                             after=node.after + inner.after)
        replaced[node.name] = new
        drop.add(inner.name)
    if not drop:
        return graph
    return ir.Graph(tuple(replaced.get(n.name, n) for n in graph.nodes if n.name not in drop))


def merge_adds(graph: ir.Graph) -> ir.Graph:
    """Inline an ``add`` that feeds only another ``add`` into it (the outer add keeps its name)."""
    current = {n.name: n for n in graph.nodes}
    drop: set[str] = set()
    for node in graph.nodes:
        if not isinstance(node, ir.Add):
            continue
        inputs: list[str] = []
        for src in node.inputs:
            inner = current[src]
            if isinstance(inner, ir.Add) and _single_consumer(graph, src):
                inputs.extend(inner.inputs)
                drop.add(src)
            else:
                inputs.append(src)
        current[node.name] = _with_inputs(node, tuple(inputs))
    if not drop:
        return graph
    return ir.Graph(tuple(current[n.name] for n in graph.nodes if n.name not in drop))


_PASSES: tuple[Callable[[ir.Graph], ir.Graph], ...] = (
    remove_dead_nodes, remove_identities, merge_structural, merge_adds,
)


def simplify(graph: ir.Graph) -> ir.Graph:
    """Apply :func:`remove_dead_nodes`, :func:`remove_identities`, :func:`merge_structural` and
    :func:`merge_adds` until the graph stops changing. The ANN function is unchanged."""
    for _ in range(len(graph.nodes) + 1):
        before = graph
        for p in _PASSES:
            graph = p(graph)
        if graph is before:
            return graph
    return graph  # pragma: no cover - every pass strictly shrinks the graph
